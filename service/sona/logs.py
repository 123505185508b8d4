"""Structured logs on stderr (stdout belongs to the ready line and, under
``sona mcp``, to JSON-RPC). ``request_id`` and ``job_id`` are bound through
contextvars so every line of a request or job carries them.

Format: ``json`` (one object per line, for collectors), ``console`` (readable,
for a person at a terminal) or ``auto`` (console when stderr is a TTY, JSON
otherwise). Everything ends up in the same stream and shape: structlog's own
lines, the standard ``logging`` records of libraries (aiohttp, faster-whisper),
``warnings.warn`` from any library, and exceptions of asyncio tasks nobody
awaited (the loop's exception handler). Tracebacks show code, never the
values of local variables (they may hold keys and passwords). Native code writing straight to file
descriptor 2 is out of reach: ctranslate2's "compute type inferred" message is
C++ (spdlog), printed as it is; ``compute_type=auto`` picks a type that never
triggers it. The engine child
process gets the parent's level and resolved format in its ``EngineConfig``."""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog

LogFormat = Literal["json", "console", "auto"]


def resolve_format(fmt: str) -> Literal["json", "console"]:
    if fmt == "auto":
        return "console" if sys.stderr.isatty() else "json"
    return "console" if fmt == "console" else "json"


def configure(level: str = "info", *, fmt: str = "auto") -> None:
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    chosen = resolve_format(fmt)
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # Tracebacks never render frame locals (structlog's and rich's default):
    # a local may hold an API key, a request's Authorization header or a
    # database URL with its password.
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
        if chosen == "console"
        else structlog.processors.JSONRenderer()
    )
    tail: list[structlog.typing.Processor] = (
        []
        if chosen == "console"
        else [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        ]
    )
    structlog.configure(
        processors=[*shared, *tail, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    # Library loggers and warnings: rendered by the same processors.
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared, *tail],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.WARNING))
    # Off, then on: installs the hook again even if something (a test runner's
    # warnings recorder) replaced warnings.showwarning since the last configure.
    logging.captureWarnings(False)
    logging.captureWarnings(True)


def _stderr_logger(*_args: Any) -> structlog.PrintLogger:
    # sys.stderr as it is now, not as it was when configured: a test's capture
    # or a redirect that has since closed must not break logging.
    return structlog.PrintLogger(sys.stderr)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg, unused-ignore]
    """A logging handler writing to whatever ``sys.stderr`` is at the time."""

    @property  # type: ignore[override, unused-ignore]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass
