"""Loops that cannot die quietly: each of the worker's loops runs its one
round over and over, and an error (a full disk, a locked database) is logged
as ``worker.loop_failed`` and retried with backoff, never the end of the
worker (A8). Which loops are waiting out an error is what makes the worker
``retrying`` on ``/ready``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("sona.worker")
BACKOFF_MAX_S = 30.0


class Done(Exception):
    """A loop's round says the loop is over (drained, or a burst is done)."""


class Supervisor:
    """Runs named loops with backoff; counts the errors they survived."""

    def __init__(self, backoff_s: float) -> None:
        self.backoff_s = backoff_s  # the first wait after an error, doubled up to the max
        self.failing: set[str] = set()  # loops waiting out a backoff after an error
        self.failures = 0  # errors survived, all loops together

    async def forever(
        self, name: str, once: Callable[[], Awaitable[None]], *, until_done: bool = False
    ) -> None:
        """Run ``once`` over and over (or, ``until_done``, until it succeeds)
        until it raises ``Done`` or the task is cancelled."""
        delay = self.backoff_s
        while True:
            try:
                await once()
                self.failing.discard(name)
                if until_done:
                    return
                delay = self.backoff_s
            except (asyncio.CancelledError, Done):
                raise
            except Exception:
                self.failing.add(name)
                self.failures += 1
                log.exception("worker.loop_failed", loop=name, retry_s=round(delay, 2))
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
