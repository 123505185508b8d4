"""Error messages name no server paths (F7): library errors such as FFmpeg's
end with the file they were reading."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sona.api.errors import public_message
from sona.app import create_app
from sona.engine.registry import bundled_model_path
from sona.jobs import LANGUAGES
from tests.helpers import audio_form, idle_app, submit, wait_done


@pytest.mark.parametrize(
    "raw,shown",
    [
        ("could not read '/srv/sona/data/uploads/d8f6a1'", "could not read '<path>'"),
        ("model /opt/models/tiny did not load", "model <path> did not load"),
        (
            "fetching https://example.org/a/b.mp3 failed",
            "fetching https://example.org/a/b.mp3 failed",
        ),
        ("a/b stays", "a/b stays"),
        ("load it with POST /v1/models/load", "load it with POST /v1/models/load"),
    ],
)
def test_public_message_hides_absolute_paths_only(raw: str, shown: str) -> None:
    assert public_message(raw) == shown


async def test_invalid_audio_message_names_no_server_path(
    aiohttp_client: Any, make_settings: Any
) -> None:
    client = await idle_app(aiohttp_client, make_settings)
    broken = b"RIFF\xff\xff\xff\x7fWAVEfmt " + b"\x13\x37" * 400  # a WAV header, then junk
    resp = await client.post("/v1/jobs", data=audio_form(data=broken))
    body = await resp.json()
    assert resp.status == 400 and body["error"]["code"] == "invalid_audio", body
    message = body["error"]["message"]
    data_dir = str(make_settings().data_dir)
    assert data_dir not in message and "/uploads/" not in message, message


# First contact (issue 18.5): errors that say what to do. ----------------------


def _misnamed(path: Path, name: str = "audio_file", **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field(name, io.BytesIO(path.read_bytes()), filename=path.name)
    for key, value in fields.items():
        form.add_field(key, value)
    return form


@pytest.mark.parametrize("route", ["/v1/jobs", "/v1/audio/transcriptions"])
async def test_audio_under_another_field_name_says_where_it_goes(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path, tmp_path: Path, route: str
) -> None:
    client = await idle_app(aiohttp_client, make_settings)
    small = tmp_path / "small.wav"
    small.write_bytes(fox_wav.read_bytes()[:20_000])  # noqa: ASYNC240 (under the 64 KB limit)
    for path in (fox_wav, small):  # too large for a text field; not text
        resp = await client.post(route, data=_misnamed(path))
        body = await resp.json()
        assert resp.status == 400, body
        assert body["error"]["message"] == (
            "no audio: send the file in the `file` field (received field `audio_file`)"
        )
        assert body["error"]["param"] == "file"
    assert list((make_settings().data_dir / "uploads").iterdir()) == []


async def test_no_file_at_all_names_the_file_field(aiohttp_client: Any, make_settings: Any) -> None:
    client = await idle_app(aiohttp_client, make_settings)
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("model", "tiny.en")
    resp = await client.post("/v1/jobs", data=form)
    body = await resp.json()
    assert resp.status == 400 and body["error"]["message"].startswith(
        "no audio: send the file in the `file` field"
    ), body
    form = aiohttp.FormData()
    form.add_field("meta", io.BytesIO(b'{"a": 1}'), filename="m.json")  # text: kept as a field
    resp = await client.post("/v1/jobs", data=form)
    assert "(received field `meta`)" in (await resp.json())["error"]["message"]


def test_the_language_list_is_faster_whispers() -> None:
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    assert set(_LANGUAGE_CODES) == LANGUAGES


@pytest.mark.parametrize("route", ["/v1/jobs", "/v1/audio/transcriptions"])
async def test_unknown_language_code_is_400_naming_the_list(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path, route: str
) -> None:
    client = await idle_app(aiohttp_client, make_settings)
    resp = await client.post(route, data=audio_form(fox_wav, language="xx"))
    body = await resp.json()
    assert resp.status == 400 and body["error"]["param"] == "language", body
    message = body["error"]["message"]
    assert "'xx'" in message and "faster-whisper's (Whisper's) language list" in message
    assert "fr" in message and "yue" in message  # the list itself


@pytest.mark.parametrize(
    ("route", "fields"),
    [
        ("/v1/jobs", {"language": "fr", "model": "tiny.en"}),
        ("/v1/jobs", {"language": "fr"}),  # the default model, tiny.en
        ("/v1/audio/transcriptions", {"language": "de", "model": "whisper-1"}),
    ],
)
async def test_a_language_an_english_only_model_cannot_do_is_400(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path, route: str, fields: dict[str, str]
) -> None:
    client = await idle_app(aiohttp_client, make_settings)
    resp = await client.post(route, data=audio_form(fox_wav, **fields))
    body = await resp.json()
    assert resp.status == 400 and body["error"]["code"] == "unsupported_language", body
    assert "tiny.en is English-only" in body["error"]["message"]
    assert body["error"]["param"] == "language"
    ok = await client.post("/v1/jobs", data=audio_form(fox_wav, language="en"))
    assert ok.status == 202, await ok.text()


async def test_english_only_model_found_at_run_time_fails_the_job_saying_why(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path, tmp_path: Path
) -> None:
    """A directory not named *.en is known English-only once the engine loads it."""
    bundled = bundled_model_path()
    assert bundled is not None
    models = tmp_path / "models"
    models.mkdir()
    (models / "english").symlink_to(bundled, target_is_directory=True)
    client = await aiohttp_client(create_app(make_settings(model=None, model_dir=models)))
    job = await submit(client, fox_wav, model="english", language="fr")
    done = await wait_done(client, job["id"])
    assert done["status"] == "failed", done
    assert done["error"]["code"] == "unsupported_language", done
    assert "english is English-only" in done["error"]["message"]


async def test_model_not_found_says_where_it_looked_and_what_to_do(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    client = await idle_app(aiohttp_client, make_settings)
    resp = await client.post("/v1/jobs", data=audio_form(fox_wav, model="large-v3"))
    body = await resp.json()
    assert resp.status == 404 and body["error"]["code"] == "model_not_found", body
    message = body["error"]["message"]
    model_dir = str(make_settings().resolved_model_dir)
    assert f"model directory {model_dir} " in message  # configured: the operator's to see
    assert f"{model_dir}/large-v3" in message
    assert "POST /v1/models/load" in message and "SONA_ALLOW_DOWNLOAD" in message


def test_kept_paths_survive_and_others_do_not() -> None:
    kept = "/srv/my models"
    shown = public_message(f"looked in {kept} for {kept}/x; see /etc/sona/secret", (kept,))
    assert shown == f"looked in {kept} for {kept}/x; see <path>"


async def test_every_json_body_ends_with_a_newline(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    client = await aiohttp_client(create_app(make_settings()))
    requests = [
        client.get("/health"),
        client.get("/v1/jobs"),
        client.get("/openapi.json"),
        client.get("/v1/jobs/nope"),  # our error
        client.get("/no/such/route"),  # aiohttp's 404, in our shape
        client.put("/v1/jobs"),  # aiohttp's 405
        client.post("/v1/audio/transcriptions", data=audio_form(fox_wav)),  # rendered JSON
    ]
    for request in requests:
        resp = await request
        raw = await resp.read()
        assert resp.content_type == "application/json", resp
        assert raw.endswith(b"}\n") and raw.count(b"\n") == 1, (resp.url, raw[-40:])
        assert int(resp.headers["Content-Length"]) == len(raw)
