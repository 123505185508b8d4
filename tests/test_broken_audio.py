"""Broken audio (F6, RELIABILITY 15): damage is detected, never papered over.
Nothing decodable fails the job with ``invalid_audio`` (not retried, worker
alive); partly decodable completes with what could be decoded, its decoded
duration and ``warnings: ["audio_truncated"]`` in the job and the transcript's
JSON formats. Every file is made here from tests/audio."""

from __future__ import annotations

import random
import wave
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from sona.app import create_app
from sona.audio import DecodeReport, decode_blocks
from sona.errors import InvalidAudio
from sona.keys import WORKER
from tests.helpers import audio_form, submit, wait_done

AUDIO = Path(__file__).parent / "audio"


def as_flac(src: Path, out: Path) -> Path:
    """``src`` (16 kHz mono WAV) encoded as FLAC with PyAV (no ffmpeg binary)."""
    with wave.open(str(src)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    with av.open(str(out), "w", format="flac") as container:
        stream = container.add_stream("flac", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.rate, frame.pts = rate, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return out


def cut(src: Path, out: Path, size: int) -> Path:
    out.write_bytes(src.read_bytes()[:size])
    return out


def flipped(src: Path, out: Path, count: int = 2000) -> Path:
    """``count`` bytes past the header inverted, at places fixed by a seed."""
    data = bytearray(src.read_bytes())
    for i in random.Random(7).sample(range(200, len(data)), count):
        data[i] ^= 0xFF
    out.write_bytes(bytes(data))
    return out


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("broken")
    flac = as_flac(AUDIO / "fox.wav", d / "fox.flac")
    return {
        "flac": flac,
        "wav_200_bytes": cut(AUDIO / "fox.wav", d / "w200.wav", 200),
        "wav_cut_to_5kb": cut(AUDIO / "fox.wav", d / "w5k.wav", 5000),
        "flac_flipped": flipped(flac, d / "flipped.flac"),
        "flac_truncated": cut(flac, d / "truncated.flac", flac.stat().st_size // 3),
    }


def decoded(path: Path) -> DecodeReport:
    report = DecodeReport()
    for _ in decode_blocks(path, max_seconds=600, report=report):
        pass
    return report


def test_r15_an_intact_file_decodes_in_full_with_no_warning(broken: dict[str, Path]) -> None:
    report = decoded(broken["flac"])
    assert report.declared_s is not None and report.warnings() == ()
    assert report.seconds == pytest.approx(report.declared_s, abs=0.01)


def test_r15_a_200_byte_wav_holds_nothing_decodable(broken: dict[str, Path]) -> None:
    with pytest.raises(InvalidAudio, match="damaged"):
        decoded(broken["wav_200_bytes"])


@pytest.mark.parametrize("name", ["wav_cut_to_5kb", "flac_flipped", "flac_truncated"])
def test_r15_partly_decodable_files_are_reported_truncated(
    broken: dict[str, Path], name: str
) -> None:
    whole = decoded(broken["flac"]).seconds
    report = decoded(broken[name])
    assert report.warnings() == ("audio_truncated",)
    assert 0.1 <= report.seconds < whole, report


async def test_r15_broken_audio_through_the_daemon(
    aiohttp_client: Any, make_settings: Any, broken: dict[str, Path]
) -> None:
    client = await aiohttp_client(create_app(make_settings()))
    resp = await client.post(
        "/v1/jobs", data=audio_form(broken["wav_200_bytes"], filename="w200.wav")
    )
    assert resp.status == 202, await resp.text()  # its header probes fine
    failed = await wait_done(client, (await resp.json())["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "invalid_audio", failed
    assert failed["attempts"] == 1 and failed["warnings"] == []  # not retried

    whole = await wait_done(client, (await submit(client, broken["flac"]))["id"])
    assert whole["status"] == "completed" and whole["warnings"] == []
    assert "fox" in whole["text"].lower()
    for name in ("wav_cut_to_5kb", "flac_flipped", "flac_truncated"):
        job = await wait_done(client, (await submit(client, broken[name]))["id"])
        assert job["status"] == "completed", (name, job)
        assert job["warnings"] == ["audio_truncated"], (name, job)
        # The duration is what was decoded, not what the header claimed.
        assert job["duration"] == pytest.approx(decoded(broken[name]).seconds, abs=0.01)
        assert job["duration"] < whole["duration"]
        url = f"/v1/jobs/{job['id']}/transcript"
        verbose = await (await client.get(url, params={"format": "verbose_json"})).json()
        plain = await (await client.get(url, params={"format": "json"})).json()
        assert verbose["warnings"] == plain["warnings"] == ["audio_truncated"]
        assert verbose["duration"] == pytest.approx(job["duration"], abs=0.01)
    clean = await (await client.get(f"/v1/jobs/{whole['id']}/transcript?format=json")).json()
    assert "warnings" not in clean  # a clean transcript is OpenAI's shape exactly
    assert client.app[WORKER].state == "running"  # nothing broke the worker
