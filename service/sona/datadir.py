"""One data directory, one owner: ``sona.lock`` in it, held with ``flock`` for
the life of the process that serves it.

Two daemons on one SQLite data dir would each sweep the other's in-flight
uploads and recover the other's jobs; the second one refuses to start instead.
The kernel drops the lock when its holder dies (``kill -9`` included), so a
crash never leaves a stale lock behind, and the pid written in the file only
names the holder in the message."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from sona.errors import DataDirInUse

LOCK_NAME = "sona.lock"


class DataDirLock:
    """``acquire()`` or DataDirInUse; ``release()`` (also at process exit)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_CLOEXEC: the engine process (spawned) must not inherit the lock.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise DataDirInUse(
                f"the data directory {self.path.parent} is in use by process {holder}: "
                "one daemon per data directory (stop it, or give this one --data-dir)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the descriptor drops the flock
        self._fd = None
