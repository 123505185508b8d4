"""Audio by content, never by name: sniff the container from its first bytes,
probe the duration from the header, and decode with a sample counter so a few
MB of compressed silence cannot expand into gigabytes.

Blocking functions (``probe``, ``decode``) must run off the event loop."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from service.errors import AudioTooLong, InvalidAudio

SAMPLE_RATE = 16_000
SNIFF_BYTES = 64

# (offset, magic, name). Playlists (#EXTM3U), HTML, ZIP and everything else
# unknown are refused before any decoder sees them: demuxers of playlist
# formats can be told to read local files.
_MAGIC: list[tuple[int, bytes, str]] = [
    (0, b"RIFF", "wav"),
    (0, b"RF64", "wav"),
    (0, b"fLaC", "flac"),
    (0, b"OggS", "ogg"),
    (0, b"ID3", "mp3"),
    (0, b"\x1a\x45\xdf\xa3", "webm"),
    (4, b"ftyp", "mp4"),
    (0, b"FORM", "aiff"),
    (0, b"caff", "caf"),
    (0, b"#!AMR", "amr"),
    (0, b"0&\xb2u\x8ef\xcf\x11", "asf"),
]


def sniff(head: bytes) -> str | None:
    """The container name for a file starting with ``head``, or None if not audio."""
    for offset, magic, name in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            if name == "wav" and head[8:12] != b"WAVE":
                return None
            if name == "aiff" and head[8:12] not in (b"AIFF", b"AIFC"):
                return None
            return name
    # Bare MPEG audio (mp3 without ID3) and ADTS AAC start with a frame sync.
    if len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0:
        return "mpeg"
    return None


def probe(path: Path) -> tuple[float | None, int]:
    """(duration in seconds from the container header or None, channel count).
    Raises InvalidAudio when no audio stream can be opened."""
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise InvalidAudio("the file has no audio stream")
            stream = container.streams.audio[0]
            duration: float | None = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            return duration, stream.codec_context.channels or 1
    except av.FFmpegError as exc:
        raise InvalidAudio(f"the file could not be read as audio: {_reason(exc)}") from exc


def _reason(exc: av.FFmpegError) -> str:
    """FFmpeg's reason without the file name: error messages reach clients and
    must not name server paths (``str(exc)`` ends with the upload's path)."""
    return str(exc.strerror or "unreadable data")


def decode_blocks(
    path: Path, *, max_seconds: float, channels: int = 1, block_s: float = 30.0
) -> Iterator[np.ndarray]:
    """Decode to 16 kHz float32 as a stream of blocks of about ``block_s``
    seconds: shape (n,) when ``channels`` is 1, (2, n) when 2 (left, right).
    Memory holds one block at a time, whatever the file's length or what its
    header claims; past ``max_seconds`` of samples it stops with AudioTooLong."""
    limit = int(max_seconds * SAMPLE_RATE)
    block = int(block_s * SAMPLE_RATE) * channels
    # s16 like faster-whisper's own decode_audio, so results match it exactly.
    resampler = av.AudioResampler(
        format="s16", layout="stereo" if channels == 2 else "mono", rate=SAMPLE_RATE
    )
    pending: list[np.ndarray] = []
    size = total = 0

    def flush() -> np.ndarray:
        nonlocal pending, size
        samples = np.concatenate(pending).astype(np.float32) / 32768.0
        pending, size = [], 0
        return np.stack([samples[0::2], samples[1::2]]) if channels == 2 else samples

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise InvalidAudio("the file has no audio stream")
            # None at the end flushes the resampler's last samples.
            frames = itertools.chain(_valid_frames(container), [None])
            for out in (o for f in frames for o in resampler.resample(f)):
                data = out.to_ndarray().reshape(-1)
                pending.append(data)
                size += data.size
                total += data.size
                if total > limit * channels:
                    raise AudioTooLong(f"audio is longer than the limit of {max_seconds:.0f} s")
                if size >= block:
                    yield flush()
    except av.FFmpegError as exc:
        raise InvalidAudio(f"the audio could not be decoded: {_reason(exc)}") from exc
    if total == 0:
        raise InvalidAudio("the file holds no decodable audio samples")
    if size:
        yield flush()


def decode(path: Path, *, max_seconds: float) -> np.ndarray:
    """The whole file as one 16 kHz mono float32 array (for short files and the
    bench; the worker streams with ``decode_blocks``)."""
    return np.concatenate(list(decode_blocks(path, max_seconds=max_seconds)))


def _valid_frames(container: av.container.InputContainer) -> Iterator[av.AudioFrame]:
    """Decoded frames, skipping undecodable packets the way faster-whisper does, so
    a file with a damaged stretch still yields what can be heard."""
    for packet in container.demux(audio=0):
        try:
            yield from packet.decode()
        except av.InvalidDataError:
            continue
