"""Uploads: streamed, hashed, limited, sniffed, swept (F7, A9)."""

from __future__ import annotations

import errno
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sona.errors import (
    EmptyFile,
    PayloadTooLarge,
    StorageFull,
    UnsupportedMedia,
    UploadTimeout,
)
from sona.uploads import UploadDir, display_name

WAV_HEAD = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 60


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


@pytest.mark.parametrize(
    "raw,shown",
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\x.wav", "x.wav"),
        ("a\x00b.wav", "ab.wav"),
        ("x" * 4096, "x" * 255),
        ("", "audio"),
        (None, "audio"),
        ("/", "audio"),
    ],
)
def test_display_name_is_never_a_path(raw: str | None, shown: str) -> None:
    assert display_name(raw) == shown


async def test_save_hashes_and_sizes(tmp_path: Path) -> None:
    d = UploadDir(tmp_path / "up")
    body = [WAV_HEAD, b"\x01" * 1000, b"\x02" * 5]
    up = await d.save(chunks(*body), name="../a.wav", max_bytes=10_000, idle_timeout_s=5)
    data = b"".join(body)
    assert up.size == len(data) and up.sha256 == hashlib.sha256(data).hexdigest()
    assert up.path.parent == d.root and up.path.read_bytes() == data and up.name == "a.wav"
    assert up.container == "wav"


@pytest.mark.parametrize(
    "parts,exc",
    [
        ((WAV_HEAD, b"\x00" * 2000), PayloadTooLarge),
        ((), EmptyFile),
        ((b"<html>" * 20,), UnsupportedMedia),
        ((b"RIFF",), UnsupportedMedia),  # too short to be anything
    ],
)
async def test_refusals_leave_no_file(tmp_path: Path, parts: tuple[bytes, ...], exc: type) -> None:
    d = UploadDir(tmp_path / "up")
    with pytest.raises(exc):
        await d.save(chunks(*parts), name="a", max_bytes=1000, idle_timeout_s=5)
    assert list(d.root.iterdir()) == []


async def test_disk_full_is_storage_full_and_removes_partial(tmp_path: Path) -> None:
    d = UploadDir(tmp_path / "up")

    async def failing() -> AsyncIterator[bytes]:
        yield WAV_HEAD
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(StorageFull):
        await d.save(failing(), name="a", max_bytes=10_000, idle_timeout_s=5)
    assert list(d.root.iterdir()) == []


async def test_slow_client_hits_idle_timeout(tmp_path: Path) -> None:
    import asyncio

    d = UploadDir(tmp_path / "up")

    async def slow() -> AsyncIterator[bytes]:
        yield WAV_HEAD
        await asyncio.sleep(5)
        yield b"late"

    with pytest.raises(UploadTimeout):
        await d.save(slow(), name="a", max_bytes=10_000, idle_timeout_s=0.2)
    assert list(d.root.iterdir()) == []


def test_sweep_removes_orphans_and_partials(tmp_path: Path) -> None:
    d = UploadDir(tmp_path / "up")
    keep = d.root / "keep"
    keep.write_bytes(b"x")
    (d.root / "orphan").write_bytes(b"x")
    (d.root / "half.part").write_bytes(b"x")
    removed = d.sweep({str(keep)})
    assert sorted(p.name for p in removed) == ["half.part", "orphan"]
    assert [p.name for p in d.root.iterdir()] == ["keep"]
