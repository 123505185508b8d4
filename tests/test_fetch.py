"""Submitting by URL (A1) under the callback-URL address rules (E3,
RELIABILITY 22). The audio server is a real aiohttp server on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from sona.app import create_app
from tests.helpers import wait_done


@pytest.fixture
async def audio_server(fox_wav: Path) -> Any:
    hits: list[str] = []

    async def serve_file(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        return web.FileResponse(fox_wav)

    async def redirect(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        raise web.HTTPFound("/fox.wav")

    async def missing(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        raise web.HTTPNotFound()

    app = web.Application()
    app.router.add_get("/fox.wav", serve_file)
    app.router.add_get("/moved", redirect)
    app.router.add_get("/gone", missing)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    server.hits = hits  # type: ignore[attr-defined]
    yield server
    await server.close()


async def test_url_job_completes_on_a_loopback_daemon(
    aiohttp_client: Any, make_settings: Any, audio_server: Any, manifest: dict[str, Any]
) -> None:
    client = await aiohttp_client(create_app(make_settings()))
    url = f"http://127.0.0.1:{audio_server.port}/fox.wav"
    resp = await client.post(
        "/v1/jobs", json={"url": url, "word_timestamps": True, "metadata": {"from": "url"}}
    )
    assert resp.status == 202, await resp.text()
    job = await wait_done(client, (await resp.json())["id"])
    assert job["status"] == "completed" and job["file_name"] == "fox.wav"
    assert all(k in job["text"].lower() for k in manifest["fox.wav"]["keywords"])
    assert job["metadata"] == {"from": "url"}


# by_rule: the address rule itself refuses ("localhost." by its name, RFC 6761;
# the decimal and hex spellings parsed as IPv4 without asking DNS).
@pytest.mark.parametrize(
    "host,by_rule",
    [
        ("127.0.0.1", True),
        ("[::ffff:127.0.0.1]", True),
        ("0x7f000001", True),
        ("100.64.0.1", True),
        ("10.0.0.1", True),
        ("[::1]", True),
        ("2130706433", True),
        ("localhost.", True),
    ],
)
async def test_private_targets_refused_unless_allowed(
    aiohttp_client: Any, make_settings: Any, audio_server: Any, host: str, by_rule: bool
) -> None:
    client = await aiohttp_client(create_app(make_settings(model=None, allow_private_urls=False)))
    resp = await client.post("/v1/jobs", json={"url": f"http://{host}:{audio_server.port}/fox.wav"})
    body = await resp.json()
    assert resp.status == 422 and body["error"]["code"] == "url_refused", body
    if by_rule:
        assert "not a public address" in body["error"]["message"] or (
            "loopback name" in body["error"]["message"]
        )
    assert audio_server.hits == []  # the loopback listener received nothing


async def test_metadata_address_refused_even_when_private_allowed(
    aiohttp_client: Any, make_settings: Any
) -> None:
    client = await aiohttp_client(create_app(make_settings(model=None, allow_private_urls=True)))
    for url in ("http://169.254.169.254/latest/meta-data", "http://[fe80::1]/x"):
        resp = await client.post("/v1/jobs", json={"url": url})
        assert resp.status == 422 and "link-local" in (await resp.json())["error"]["message"]


@pytest.mark.parametrize("path,status", [("/moved", 422), ("/gone", 422)])
async def test_redirects_not_followed_and_errors_reported(
    aiohttp_client: Any, make_settings: Any, audio_server: Any, path: str, status: int
) -> None:
    client = await aiohttp_client(create_app(make_settings(model=None)))
    resp = await client.post(
        "/v1/jobs", json={"url": f"http://127.0.0.1:{audio_server.port}{path}"}
    )
    assert resp.status == status
    assert audio_server.hits == [path]  # fetched once, the redirect not followed
    assert list((make_settings().data_dir / "uploads").iterdir()) == []


@pytest.mark.parametrize(
    "body,param",
    [
        ({"url": "file:///etc/passwd"}, "url"),
        ({"url": "ftp://x/a.wav"}, "url"),
        ({}, "url"),
        ({"url": 5}, "url"),
        ({"url": "http://example.com/a", "bogus": 1}, "bogus"),
    ],
)
async def test_bad_url_bodies_are_400(
    aiohttp_client: Any, make_settings: Any, body: dict[str, Any], param: str
) -> None:
    client = await aiohttp_client(create_app(make_settings(model=None)))
    resp = await client.post("/v1/jobs", json=body)
    assert resp.status == 400 and (await resp.json())["error"]["param"] == param


async def test_oversize_url_body_is_413(
    aiohttp_client: Any, make_settings: Any, audio_server: Any
) -> None:
    client = await aiohttp_client(create_app(make_settings(model=None, max_upload_mb=0.05)))
    resp = await client.post(
        "/v1/jobs", json={"url": f"http://127.0.0.1:{audio_server.port}/fox.wav"}
    )
    assert resp.status == 413
    assert list((make_settings().data_dir / "uploads").iterdir()) == []
