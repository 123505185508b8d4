"""Operations: auth, the loopback Host check, request ids, retention (F2, F4, A9)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import SecretStr

from service.app import create_app
from tests.helpers import submit, wait_done


async def test_api_keys_guard_everything_but_probes(
    aiohttp_client: Any, make_settings: Any, tmp_path: Path
) -> None:
    keyfile = tmp_path / "keys"
    keyfile.write_text("from-file\n")
    settings = make_settings(model=None, api_keys=[SecretStr("s3cret")], api_key_file=keyfile)
    client = await aiohttp_client(create_app(settings))
    assert (await client.get("/health")).status == 200
    denied = await client.get("/v1/jobs")
    assert denied.status == 401 and denied.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await denied.json())["error"]["code"] == "unauthorized"
    wrong = await client.get("/v1/jobs", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    for key in ("s3cret", "from-file"):
        ok = await client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"})
        assert ok.status == 200


async def test_foreign_host_header_is_refused_on_loopback(
    aiohttp_client: Any, make_settings: Any
) -> None:
    client = await aiohttp_client(create_app(make_settings(model=None)))
    evil = await client.get("/v1/jobs", headers={"Host": "evil.example"})
    assert evil.status == 403 and (await evil.json())["error"]["code"] == "forbidden"
    for host in ("localhost:8765", "127.0.0.1", "[::1]:8765"):
        assert (await client.get("/health", headers={"Host": host})).status == 200


async def test_request_id_is_echoed_or_generated(aiohttp_client: Any, make_settings: Any) -> None:
    client = await aiohttp_client(create_app(make_settings(model=None)))
    mine = await client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert mine.headers["X-Request-ID"] == "abc-123"
    generated = await client.get("/nope")
    assert generated.status == 404 and len(generated.headers["X-Request-ID"]) == 32
    assert (await generated.json())["error"]["code"] == "not_found"


async def test_retention_deletes_finished_jobs_and_files(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    client = await aiohttp_client(create_app(make_settings()))
    job = await submit(client, fox_wav)
    await wait_done(client, job["id"])
    uploads = make_settings().data_dir / "uploads"
    assert len(list(uploads.iterdir())) == 1
    await client.close()
    # Restart with zero retention: the start-up sweep removes the finished job.
    client = await aiohttp_client(create_app(make_settings(model=None, retention_hours=0)))
    assert (await client.get(f"/v1/jobs/{job['id']}")).status == 404
    assert list(uploads.iterdir()) == []
