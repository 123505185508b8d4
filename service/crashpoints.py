"""Crash points for the fault tests (shared/RELIABILITY.md): with
``SONA_TEST_CRASH_AT=<name>`` the process dies on the spot, as a ``kill -9``
would, at that named moment. Unset, each call is one dictionary lookup."""

from __future__ import annotations

import os


def crash_point(name: str) -> None:
    if os.environ.get("SONA_TEST_CRASH_AT") == name:
        os._exit(137)
