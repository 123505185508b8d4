"""RELIABILITY 28: secrets never reach the logs. A real 500 with API keys and a
PostgreSQL password configured writes neither (tracebacks render no locals);
settings and keys mask themselves in every repr; the WAV with an unknown codec
tag that used to be such a 500 is a 400."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from sona.app import create_app
from sona.audio import probe
from sona.errors import InvalidAudio
from sona.keys import SETTINGS
from sona.logs import configure
from sona.settings import Settings
from tests.helpers import audio_form
from tests.pg import pg_schema_url

KEY = "sk-live-Zq81kd02-secret-key"
PASSWORD = "Pg-Pass-77x1-secret"


def unknown_codec_wav(seconds: float = 1.0) -> bytes:
    """A well-formed RIFF/WAVE file whose format tag (0x1234) no decoder knows."""
    data = bytes(int(16000 * seconds) * 2)
    fmt = struct.pack("<HHIIHH", 0x1234, 1, 16000, 32000, 2, 16)
    chunks = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    chunks += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(chunks)) + chunks


def with_password(url: str) -> str:
    # The test server trusts local connections: the password is carried, not checked.
    return url.replace("postgres@", f"postgres:{PASSWORD}@", 1)


def test_r28_settings_and_keys_mask_themselves() -> None:
    settings = Settings(
        api_keys=[KEY],
        store=f"postgresql://sona:{PASSWORD}@db.internal/sona?sslmode=require",
        webhook_secret="whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=",
    )
    keys = settings.all_api_keys()
    for text in (repr(settings), str(settings), f"{settings!r}", repr(keys), str(keys)):
        assert KEY not in text and PASSWORD not in text and "c2VjcmV0" not in text
    assert "postgresql://sona:***@db.internal/sona" in repr(settings)
    assert keys.matches(KEY) and not keys.matches(KEY[:-1]) and len(keys) == 1
    query = Settings(store=f"postgresql://db/sona?user=a&password={PASSWORD}")
    assert PASSWORD not in repr(query) and PASSWORD not in str(query.masked())


def test_r28_an_unknown_wav_codec_is_invalid_audio(tmp_path: Path) -> None:
    path = tmp_path / "odd.wav"
    path.write_bytes(unknown_codec_wav())
    with pytest.raises(InvalidAudio, match="codec is not supported"):
        probe(path)


async def crashing(request: web.Request) -> web.Response:
    """A handler with a bug, its frame holding what a bug's frame may hold."""
    settings = request.app[SETTINGS]
    dsn = settings.store_url
    authorization = request.headers.get("Authorization")
    raise RuntimeError(f"a bug while handling {request.path} ({len(dsn)}, {bool(authorization)})")


@pytest.mark.parametrize("fmt", ["json", "console"])
async def test_r28_a_500_logs_no_key_and_no_password(
    aiohttp_client: Any, make_settings: Any, capsys: Any, fox_wav: Path, fmt: str
) -> None:
    async with pg_schema_url() as url:
        settings = make_settings(model=None, api_keys=[KEY], store=with_password(url))
        app = create_app(settings)
        app.router.add_get("/crash", crashing)
        configure("info", fmt=fmt)
        capsys.readouterr()
        client = await aiohttp_client(app)
        auth = {"Authorization": f"Bearer {KEY}"}
        resp = await client.get("/crash", headers=auth)
        assert resp.status == 500
        assert (await resp.json())["error"]["code"] == "internal_error"
        form = audio_form(data=unknown_codec_wav(), filename="odd.wav")
        resp = await client.post("/v1/jobs", data=form, headers=auth)
        body = await resp.json()
        assert resp.status == 400 and body["error"]["code"] == "invalid_audio", body
        assert (await client.post("/v1/jobs", data=audio_form(fox_wav), headers=auth)).status == 202
        await client.close()
    err = capsys.readouterr().err
    assert "request.crashed" in err and "a bug while handling /crash" in err
    assert "crashing" in err  # the traceback is there: frames, without their locals
    assert KEY not in err and PASSWORD not in err
