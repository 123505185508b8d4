"""``python -m sona_mcp [--http PORT]``: the same server as ``sona mcp``."""

from __future__ import annotations

import argparse

from sona_mcp.server import run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sona_mcp", description=__doc__)
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP instead")
    run(http_port=parser.parse_args(argv).http)


if __name__ == "__main__":
    main()
