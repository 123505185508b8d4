"""Crash points for the fault tests (shared/RELIABILITY.md): with
``SONA_TEST_CRASH_AT=<name>`` (or ``<name>:<key>``, to hit one job only) the
process dies on the spot at that named moment — the daemon as a ``kill -9``
would (exit 137), the engine process by SIGSEGV, as a decoder bug would.
With ``SONA_TEST_HANG_AT=<name>[:<key>]`` the calling thread hangs there
instead, as a decoder stuck in a loop would. With ``SONA_TEST_FAULT_ONCE=<path>``
as well, a point fires only where that file can still be created: once, in
whichever process gets there first (a model load that fails once, then works
in the restarted engine). Unset, each call is a dictionary lookup or two."""

from __future__ import annotations

import os
import signal
import threading


def crash_point(name: str, *keys: str, segfault: bool = False) -> None:
    if _wanted("SONA_TEST_HANG_AT", name, keys) and _first():
        threading.Event().wait()  # forever: only a kill ends it
    if _wanted("SONA_TEST_CRASH_AT", name, keys) and _first():
        if segfault:
            os.kill(os.getpid(), signal.SIGSEGV)
        os._exit(137)


def _wanted(var: str, name: str, keys: tuple[str, ...]) -> bool:
    wanted = os.environ.get(var)
    return wanted is not None and (wanted == name or any(wanted == f"{name}:{k}" for k in keys))


def _first() -> bool:
    marker = os.environ.get("SONA_TEST_FAULT_ONCE")
    if marker is None:
        return True
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True
