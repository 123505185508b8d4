"""SIGTERM and SIGINT for the long-running commands (``sona serve``, ``sona
worker``): the first asks for a graceful stop, a second leaves at once."""

from __future__ import annotations

import asyncio
import os
import signal

import structlog

log = structlog.get_logger("sona")


def stop_on_signals(role: str) -> asyncio.Event:
    """An event set by the first signal; log events are ``{role}.stopping`` and
    ``{role}.forced_exit``. Call from the running loop."""
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            # Second signal: leave now. Jobs still 'processing' under this pid go
            # back to the queue: at the next start here, or when their lease
            # lapses and another node recovers them.
            log.warning(f"{role}.forced_exit", signal=signum)
            os._exit(128 + signum)
        log.info(f"{role}.stopping", signal=signum)
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    return stop
