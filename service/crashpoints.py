"""Crash points for the fault tests (shared/RELIABILITY.md): with
``SONA_TEST_CRASH_AT=<name>`` (or ``<name>:<key>``, to hit one job only) the
process dies on the spot at that named moment — the daemon as a ``kill -9``
would (exit 137), the engine process by SIGSEGV, as a decoder bug would.
Unset, each call is one dictionary lookup."""

from __future__ import annotations

import os
import signal


def crash_point(name: str, *keys: str, segfault: bool = False) -> None:
    wanted = os.environ.get("SONA_TEST_CRASH_AT")
    if wanted is None:
        return
    if wanted == name or any(wanted == f"{name}:{key}" for key in keys):
        if segfault:
            os.kill(os.getpid(), signal.SIGSEGV)
        os._exit(137)
