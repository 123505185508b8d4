"""asyncio's own error reports (``loop.call_exception_handler``), into the
structured log and rate-limited: "Task exception was never retrieved" and the
like become one ``loop.error`` line with the task's name and traceback.

Out of file descriptors, asyncio reports "socket.accept() out of system
resource" on every accept retry, as plain text with a traceback: hundreds of
thousands of lines under a connection flood. Here each report is one
``loop.error`` line, and at most ``limit`` of them per ``interval_s``; the
next line after a quiet spell says how many were suppressed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger("sona")


class LoopErrorLog:
    """A loop exception handler: ``loop.set_exception_handler(LoopErrorLog())``."""

    def __init__(
        self,
        *,
        limit: int = 10,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.interval_s = interval_s
        self.clock = clock
        self.window_start = -interval_s
        self.logged = 0
        self.suppressed = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        now = self.clock()
        if now - self.window_start >= self.interval_s:
            self.window_start, self.logged = now, 0
        if self.logged >= self.limit:
            self.suppressed += 1
            return
        self.logged += 1
        exc = context.get("exception")
        fields: dict[str, Any] = {"message": context.get("message", "")}
        task = context.get("task") or context.get("future")
        if isinstance(task, asyncio.Task):  # "Task exception was never retrieved"
            fields["task"] = task.get_name()
        if exc is not None:
            fields["error"] = f"{type(exc).__name__}: {exc}"
            fields["exc_info"] = (type(exc), exc, exc.__traceback__)
        if self.suppressed:
            fields["suppressed"], self.suppressed = self.suppressed, 0
        log.error("loop.error", **fields)


def install(loop: asyncio.AbstractEventLoop) -> LoopErrorLog:
    handler = LoopErrorLog()
    loop.set_exception_handler(handler)
    return handler
