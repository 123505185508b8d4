"""Audio files built on the fly from the committed sentences in tests/audio:
long recordings, silence, and broken files. Stdlib only, so a fixture never
needs ffmpeg or sox to exist on the machine running the tests."""

from __future__ import annotations

import array
import json
import struct
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import Any

AUDIO = Path(__file__).parent / "audio"
RATE = 16_000
SAMPLE_WIDTH = 2  # 16-bit PCM, like everything scripts/make_test_audio.sh writes


def load_manifest() -> dict[str, Any]:
    """tests/audio/manifest.json: file name → text, duration_s and keywords
    (stereo.wav: duration_s plus a text/keywords/speech_s object per channel)."""
    data: dict[str, Any] = json.loads((AUDIO / "manifest.json").read_text())
    return data


def concat_wav(paths: Sequence[Path], out: Path, gap_s: float = 0.5, repeat: int = 1) -> Path:
    """Write ``paths`` one after another, ``repeat`` times over, with ``gap_s``
    of silence after each. The inputs must share rate, width and channels."""
    params = None
    clips: list[bytes] = []
    for path in paths:
        with wave.open(str(path), "rb") as src:
            p = src.getparams()
            clips.append(src.readframes(p.nframes))
        if params is not None and p[:3] != params[:3]:
            raise ValueError(f"{path} has {p[:3]}, expected {params[:3]} like the first file")
        params = p
    if params is None:
        raise ValueError("concat_wav needs at least one input")
    gap = bytes(int(gap_s * params.framerate) * params.sampwidth * params.nchannels)
    with wave.open(str(out), "wb") as dst:
        dst.setnchannels(params.nchannels)
        dst.setsampwidth(params.sampwidth)
        dst.setframerate(params.framerate)
        for _ in range(repeat):
            for clip in clips:
                dst.writeframes(clip)
                dst.writeframes(gap)
    return out


def silence_wav(out: Path, seconds: float, rate: int = RATE) -> Path:
    """A mono 16-bit WAV of digital silence, written in chunks: tests ask for
    files long enough (700 s, 22 MB) that one bytes object would be wasteful."""
    remaining = int(seconds * rate)
    chunk = bytes(rate * SAMPLE_WIDTH)  # one second
    with wave.open(str(out), "wb") as dst:
        dst.setnchannels(1)
        dst.setsampwidth(SAMPLE_WIDTH)
        dst.setframerate(rate)
        while remaining > 0:
            n = min(remaining, rate)
            dst.writeframes(chunk[: n * SAMPLE_WIDTH])
            remaining -= n
    return out


def flac_bomb(out: Path, seconds: int, claims_s: float) -> Path:
    """A FLAC of ``seconds`` of silence (a few hundred KB per hour) whose header
    says it lasts ``claims_s``: it passes the submit-time duration check, and
    only the sample counter while decoding can stop it."""
    import av  # PyAV encodes FLAC without ffmpeg on the machine
    import numpy as np

    with av.open(str(out), "w", format="flac") as container:
        stream = container.add_stream("flac", rate=RATE, layout="mono")
        minute = np.zeros((1, RATE * 60), np.int16)
        for n in range(seconds // 60):
            frame = av.AudioFrame.from_ndarray(minute, format="s16", layout="mono")
            frame.rate, frame.pts = RATE, n * minute.shape[1]
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    data = bytearray(out.read_bytes())
    # STREAMINFO at offset 8: after 10 bytes of block/frame sizes, 64 bits of
    # rate (20) | channels (3) | bits (5) | total samples (36).
    word = int.from_bytes(data[18:26], "big")
    word = (word & ~((1 << 36) - 1)) | int(claims_s * RATE)
    data[18:26] = word.to_bytes(8, "big")
    out.write_bytes(bytes(data))
    return out


def truncated_copy(src: Path, out: Path) -> Path:
    """``src`` cut off mid-sample a little past half-way, header untouched: the
    header promises twice the data the file holds, as after an interrupted copy."""
    data = src.read_bytes()
    out.write_bytes(data[: len(data) // 2 + 1])
    return out


def corrupt_audio(out: Path) -> Path:
    """A file that passes a RIFF/WAVE magic-byte sniff but that no decoder can
    open: the RIFF body is chunks of noise and never a 'fmt ' chunk, so the WAV
    demuxer has no codec to set up and fails (faster_whisper.decode_audio raises)."""
    # Deterministic noise: a failing test must fail the same way every run.
    noise = bytes((i * 73 + 41) % 251 for i in range(4096))
    body = b"WAVE" + b"junk" + struct.pack("<I", 64) + noise[:64] + b"data" + noise[64:]
    out.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return out


def quieter_wav(src: Path, out: Path, gain: float) -> Path:
    """``src`` (16-bit PCM) with every sample scaled by ``gain``: quiet speech."""
    with wave.open(str(src), "rb") as f:
        params = f.getparams()
        frames = f.readframes(params.nframes)
    samples = array.array("h", frames)
    scaled = array.array("h", (int(s * gain) for s in samples))
    with wave.open(str(out), "wb") as dst:
        dst.setparams(params)
        dst.writeframes(scaled.tobytes())
    return out
