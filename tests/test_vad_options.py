"""VAD options per request (vad_threshold, min_silence_duration_ms,
speech_pad_ms): validated with 400s naming the field, stored with the job, and
really handed to Silero — on the real tiny.en model, a high threshold drops
quiet speech that the default keeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from sona.app import create_app
from sona.jobs import TranscribeOptions
from tests.audio_factory import AUDIO, concat_wav, quieter_wav
from tests.helpers import audio_form, submit, wait_done

VAD = {"vad_threshold": "0.6", "min_silence_duration_ms": "300", "speech_pad_ms": "120"}
BAD = [
    ({"vad_threshold": "1.5"}, "vad_threshold"),
    ({"vad_threshold": "0"}, "vad_threshold"),
    ({"vad_threshold": "loud"}, "vad_threshold"),
    ({"min_silence_duration_ms": "-1"}, "min_silence_duration_ms"),
    ({"min_silence_duration_ms": "20000"}, "min_silence_duration_ms"),
    ({"speech_pad_ms": "2.5"}, "speech_pad_ms"),
    ({"speech_pad_ms": "5000"}, "speech_pad_ms"),
]


async def start(aiohttp_client: Any, make_settings: Any) -> TestClient:
    return await aiohttp_client(create_app(make_settings()))


async def test_vad_options_round_trip_on_the_job(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    client = await start(aiohttp_client, make_settings)
    job = await submit(client, fox_wav, **VAD)
    assert job["options"]["vad_threshold"] == 0.6
    assert job["options"]["min_silence_duration_ms"] == 300
    assert job["options"]["speech_pad_ms"] == 120
    done = await wait_done(client, job["id"])
    assert done["status"] == "completed" and "fox" in done["text"].lower()
    assert {k: done["options"][k] for k in VAD} == {k: job["options"][k] for k in VAD}
    # Not asked for: the engine's defaults, stored as "none asked".
    plain = await submit(client, fox_wav)
    assert plain["options"]["vad_threshold"] is None


@pytest.mark.parametrize(("fields", "param"), BAD)
async def test_bad_vad_values_are_400s_naming_the_field(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path, fields: dict[str, str], param: str
) -> None:
    client = await start(aiohttp_client, make_settings)
    for url in ("/v1/jobs", "/v1/audio/transcriptions"):
        resp = await client.post(url, data=audio_form(fox_wav, **fields))
        assert resp.status == 400, (url, await resp.text())
        assert (await resp.json())["error"]["param"] == param
    resp = await client.post("/v1/jobs", json={"url": "http://127.0.0.1:9/a.wav", **fields})
    assert resp.status == 400 and (await resp.json())["error"]["param"] == param


async def test_a_high_threshold_drops_quiet_speech(
    aiohttp_client: Any, make_settings: Any, tmp_path: Path, manifest: dict[str, Any]
) -> None:
    """Three sentences at full level, then one at 2 % of it. Silero judges a
    sound against what came before: at its default threshold the quiet sentence
    is speech (a chunk of its own, which the model transcribes); at 0.95 it is
    not, and only the loud ones are decoded."""
    quiet = quieter_wav(AUDIO / "weather.wav", tmp_path / "quiet.wav", gain=0.02)
    loud = [AUDIO / f"{name}.wav" for name in ("fox", "numbers", "meeting")]
    mixed = concat_wav([*loud, quiet], tmp_path / "mixed.wav", gap_s=1.0)
    client = await start(aiohttp_client, make_settings)
    texts = {}
    for threshold in ("", "0.95"):  # empty: the default
        form = audio_form(mixed, response_format="text", vad_threshold=threshold)
        resp = await client.post("/v1/audio/transcriptions", data=form)
        assert resp.status == 200, await resp.text()
        texts[threshold] = (await resp.text()).lower()
    quiet_words = manifest["weather.wav"]["keywords"]
    loud_words = ["fox", "lazy", "library", "meeting", "conference"]
    for text in texts.values():
        assert sum(w in text for w in loud_words) >= 4, texts
    assert sum(w in texts[""] for w in quiet_words) >= 3, texts
    assert not any(w in texts["0.95"] for w in quiet_words), texts


def test_silero_gets_what_was_asked_over_the_batched_defaults() -> None:
    from sona.engine.whisper import vad_options

    asked = TranscribeOptions(vad_threshold=0.7, speech_pad_ms=50)
    vad = vad_options(asked, max_speech_duration_s=20.0, min_silence_duration_ms=160)
    assert (vad.threshold, vad.speech_pad_ms, vad.min_silence_duration_ms) == (0.7, 50, 160)
    assert vad.max_speech_duration_s == 20.0
    plain = vad_options(TranscribeOptions(), min_silence_duration_ms=160)
    assert (plain.threshold, plain.speech_pad_ms) == (0.5, 400)  # faster-whisper's
