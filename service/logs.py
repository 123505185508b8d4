"""Structured logs: JSON lines on stderr (stdout belongs to the ready line and,
under ``sona mcp``, to JSON-RPC). ``request_id`` and ``job_id`` are bound
through contextvars so every line of a request or job carries them."""

from __future__ import annotations

import logging
import sys

import structlog


def configure(level: str = "info", *, json: bool = True) -> None:
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Library loggers (aiohttp access log, faster-whisper) also go to stderr.
    logging.basicConfig(stream=sys.stderr, level=max(numeric, logging.WARNING), force=True)
