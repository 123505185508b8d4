"""MCP tools that drive a running Sona daemon over HTTP (``sona mcp``)."""
