"""Audio by content, never by name: the container told from its first bytes
(``wire.sniff``, shared with the MCP tools), the duration probed from the
header, and decoding with a sample counter so a few MB of compressed silence
cannot expand into gigabytes.

Blocking functions (``probe``, ``decode``) must run off the event loop."""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from sona.errors import AudioTooLong, InvalidAudio

SAMPLE_RATE = 16_000
# Less than this decoded from a damaged file is nothing to transcribe: the job
# fails with invalid_audio rather than "completing" with no text.
MIN_DECODED_S = 0.1
# Decoded this much short of what an exact header (WAV data size, FLAC sample
# count) declares: the file was cut off. Resampling rounds by a few samples.
TRUNCATION_SLACK_S = 0.05
AUDIO_TRUNCATED = "audio_truncated"


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
            if stream.codec_context is None:  # a codec tag FFmpeg has no decoder for
                raise InvalidAudio("the file's audio codec is not supported")
            return duration, stream.codec_context.channels or 1
    except av.FFmpegError as exc:
        raise InvalidAudio(f"the file could not be read as audio: {_reason(exc)}") from exc


def _reason(exc: av.FFmpegError) -> str:
    """FFmpeg's reason without the file name: error messages reach clients and
    must not name server paths (``str(exc)`` ends with the upload's path)."""
    return str(exc.strerror or "unreadable data")


@dataclass
class DecodeReport:
    """What ``decode_blocks`` found on the way, read once it is exhausted."""

    samples: int = 0  # per channel, at 16 kHz
    damaged: bool = False  # packets skipped, or the stream broke off
    declared_s: float | None = None  # from a header that counts samples exactly

    @property
    def seconds(self) -> float:
        return self.samples / SAMPLE_RATE

    @property
    def truncated(self) -> bool:
        short = self.declared_s is not None and (
            self.seconds < self.declared_s - TRUNCATION_SLACK_S
        )
        return self.damaged or short

    def warnings(self) -> tuple[str, ...]:
        return (AUDIO_TRUNCATED,) if self.truncated else ()


def decode_blocks(
    path: Path,
    *,
    max_seconds: float,
    channels: int = 1,
    block_s: float = 30.0,
    report: DecodeReport | None = None,
) -> Iterator[np.ndarray]:
    """Decode to 16 kHz float32 as a stream of blocks of about ``block_s``
    seconds: shape (n,) when ``channels`` is 1, (2, n) when 2 (left, right).
    Memory holds one block at a time, whatever the file's length or what its
    header claims; past ``max_seconds`` of samples it stops with AudioTooLong.

    Damage is detected, not papered over (F6): undecodable packets are skipped
    and a stream that breaks off ends the decode there, both noted in
    ``report``, as is a file shorter than its exact header says. A damaged
    file with less than ``MIN_DECODED_S`` of audio is InvalidAudio."""
    report = report if report is not None else DecodeReport()
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
            report.declared_s = _declared_seconds(path, container)
            # None at the end flushes the resampler's last samples.
            frames = itertools.chain(_valid_frames(container, report), [None])
            for out in (o for f in frames for o in resampler.resample(f)):
                data = out.to_ndarray().reshape(-1)
                pending.append(data)
                size += data.size
                total += data.size
                report.samples = total // channels
                if total > limit * channels:
                    raise AudioTooLong(f"audio is longer than the limit of {max_seconds:.0f} s")
                if size >= block:
                    yield flush()
    except av.FFmpegError as exc:
        if total == 0:
            raise InvalidAudio(f"the audio could not be decoded: {_reason(exc)}") from exc
        report.damaged = True  # it broke off: keep what came before
    if total == 0:
        raise InvalidAudio("the file holds no decodable audio samples")
    if report.truncated and report.seconds < MIN_DECODED_S:
        raise InvalidAudio(
            f"the file is damaged: only {report.seconds:.3f} s of it could be decoded"
        )
    if size:
        yield flush()


def decode(path: Path, *, max_seconds: float) -> np.ndarray:
    """The whole file as one 16 kHz mono float32 array (for short files and the
    bench; the worker streams with ``decode_blocks``)."""
    return np.concatenate(list(decode_blocks(path, max_seconds=max_seconds)))


def _valid_frames(
    container: av.container.InputContainer, report: DecodeReport
) -> Iterator[av.AudioFrame]:
    """Decoded frames, skipping undecodable packets the way faster-whisper does, so
    a file with a damaged stretch still yields what can be heard (and says so)."""
    for packet in container.demux(audio=0):
        try:
            yield from packet.decode()
        except av.InvalidDataError:
            report.damaged = True


def _declared_seconds(path: Path, container: av.container.InputContainer) -> float | None:
    """The length a header states exactly, for the containers that count samples:
    FLAC's STREAMINFO and WAV's data chunk (FFmpeg sizes a WAV by the file, so
    the chunk is read here). Other headers only estimate: None."""
    name = container.format.name
    if name == "flac":
        stream = container.streams.audio[0]
        if stream.duration and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        return None
    if name == "wav":
        with path.open("rb") as f:
            return _wav_data_seconds(f.read(64 * 1024))
    return None


def _wav_data_seconds(head: bytes) -> float | None:
    """Seconds the RIFF ``data`` chunk declares (size over the byte rate of the
    ``fmt `` chunk); None for a streamed WAV (size 0 or 0xFFFFFFFF) or RF64."""
    if head[:4] != b"RIFF":
        return None
    pos, byte_rate = 12, 0
    while pos + 8 <= len(head):
        tag, size = head[pos : pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        if tag == b"fmt " and pos + 16 <= len(head):
            byte_rate = struct.unpack_from("<I", head, pos + 16)[0]
        if tag == b"data":
            if not byte_rate or size in (0, 0xFFFFFFFF):
                return None
            return size / byte_rate
        pos += 8 + size + (size & 1)
    return None
