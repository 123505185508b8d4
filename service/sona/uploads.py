"""Uploads: stream a body to ``<data>/uploads/<generated>``, hashing and
size-limiting while it streams, so memory never grows with the file. Nothing
the client sends becomes part of a path (F7)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import stat
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from sona.errors import (
    EmptyFile,
    PayloadTooLarge,
    StorageFull,
    UnsupportedMedia,
    UploadTimeout,
)
from sona.wire import SNIFF_BYTES, sniff

CHUNK = 256 * 1024


@dataclass(frozen=True)
class StoredUpload:
    path: Path
    name: str  # the client's file name, for display only, never a path
    size: int
    sha256: str
    container: str


def display_name(raw: str | None) -> str:
    """A client file name fit for showing: last path component, printable, short."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable() and ch != "\x00").strip()
    return name[:255] or "audio"


class UploadDir:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def new_path(self) -> Path:
        return self.root / uuid.uuid4().hex

    async def save(
        self,
        chunks: AsyncIterator[bytes],
        *,
        name: str | None,
        max_bytes: int,
        idle_timeout_s: float,
    ) -> StoredUpload:
        """Stream ``chunks`` to a new file. Refuses non-audio after the first bytes,
        over-size as soon as the count passes the limit, and a disk-full; in each
        case the partial file is removed."""
        final = self.new_path()
        part = final.with_suffix(".part")
        digest = hashlib.sha256()
        size = 0
        head = b""
        try:
            with part.open("wb") as out:
                while True:
                    try:
                        chunk = await asyncio.wait_for(anext(chunks, b""), idle_timeout_s)
                    except TimeoutError:
                        raise UploadTimeout(
                            f"no data for {idle_timeout_s:.0f} s; upload abandoned", param="file"
                        ) from None
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > max_bytes:
                        raise PayloadTooLarge(
                            f"file is larger than the limit of {max_bytes} bytes", param="file"
                        )
                    if len(head) < SNIFF_BYTES:
                        head += chunk[: SNIFF_BYTES - len(head)]
                        if len(head) >= SNIFF_BYTES:
                            _require_audio(head)
                    digest.update(chunk)
                    out.write(chunk)
            if size == 0:
                raise EmptyFile("the uploaded file is empty", param="file")
            container = _require_audio(head)
            part.rename(final)
        except OSError as exc:
            part.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise StorageFull("not enough disk space to store the upload") from exc
            raise
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return StoredUpload(final, display_name(name), size, digest.hexdigest(), container)

    def sweep(self, keep: set[str], *, grace_s: float | None = None) -> list[Path]:
        """Remove files no job refers to: partial uploads and orphans of a crash
        between storing a file and committing its job.

        Only files no live process can still be writing go. ``grace_s=None``
        means this process owns the directory (the data-dir lock is held, and
        nothing is being uploaded yet): every unreferenced file is an orphan.
        Where other processes may share the directory (several daemons on one
        PostgreSQL store), only files untouched for ``grace_s`` go: a live
        upload writes at least once per upload idle timeout, and a stored file
        is committed within moments."""
        cutoff = None if grace_s is None else time.time() - grace_s
        removed = []
        for path in self.root.iterdir():
            if str(path) in keep:
                continue
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode) or (cutoff is not None and st.st_mtime > cutoff):
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            removed.append(path)
        return removed


def _require_audio(head: bytes) -> str:
    container = sniff(head)
    if container is None:
        raise UnsupportedMedia(
            "the file is not a recognised audio format (wav, flac, mp3, ogg/opus, m4a/mp4, "
            "webm, aiff)",
            param="file",
        )
    return container
