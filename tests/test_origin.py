"""RELIABILITY 36: a web page on another origin cannot make the user's browser
change anything on a (keyless, loopback) daemon: state-changing requests whose
``Origin`` is not the daemon's own are 403, form and ``text/plain`` bodies
included; curl, the SDKs and the MCP layer send no ``Origin`` and the
dashboard is the daemon's own origin, so they work as before."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.helpers import audio_form, idle_app

EVIL = "http://localhost:3000"  # any page the user has open, on this machine too


def own_origin(client: TestClient) -> str:
    return str(client.make_url("/").origin())


async def job_count(client: TestClient) -> int:
    return len((await (await client.get("/v1/jobs")).json())["data"])


async def test_r36_cross_origin_writes_are_refused(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    client = await idle_app(aiohttp_client, make_settings)
    queued = await client.post("/v1/jobs", data=audio_form(fox_wav))  # no Origin: curl, SDKs
    assert queued.status == 202
    job_id = (await queued.json())["id"]
    attempts = [
        ("POST", "/v1/jobs", {"data": audio_form(fox_wav)}, {"Origin": EVIL}),
        ("POST", "/v1/jobs", {"data": {"url": "http://example.com/a.wav"}}, {"Origin": EVIL}),
        (
            "POST",
            "/v1/jobs",
            {"data": json.dumps({"url": "http://example.com/a.wav"})},
            {"Origin": EVIL, "Content-Type": "text/plain"},
        ),
        ("POST", "/v1/models/load", {"json": {"model": "tiny.en"}}, {"Origin": EVIL}),
        ("DELETE", f"/v1/jobs/{job_id}", {}, {"Origin": EVIL}),
        ("POST", "/v1/jobs", {"data": audio_form(fox_wav)}, {"Origin": "null"}),
        ("POST", "/v1/jobs", {"data": audio_form(fox_wav)}, {"Sec-Fetch-Site": "same-site"}),
        ("POST", "/v1/jobs", {"data": audio_form(fox_wav)}, {"Sec-Fetch-Site": "cross-site"}),
    ]
    for method, path, body, headers in attempts:
        resp = await client.request(method, path, headers=headers, **body)
        error = (await resp.json())["error"]
        assert resp.status == 403 and error["code"] == "forbidden", (method, path, headers)
    assert await job_count(client) == 1
    job = await (await client.get(f"/v1/jobs/{job_id}", headers={"Origin": EVIL})).json()
    assert job["status"] == "queued"  # reads are not refused; the cancel was


async def test_r36_the_daemons_own_origin_and_clients_without_one_work(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    client = await idle_app(aiohttp_client, make_settings)
    dashboard = {"Origin": own_origin(client), "Sec-Fetch-Site": "same-origin"}
    resp = await client.post("/v1/jobs", data=audio_form(fox_wav), headers=dashboard)
    assert resp.status == 202, await resp.text()
    resp = await client.delete(f"/v1/jobs/{(await resp.json())['id']}", headers=dashboard)
    assert resp.status == 200
    direct = {"Sec-Fetch-Site": "none"}  # typed in the address bar, a bookmark
    assert (await client.post("/v1/jobs", data=audio_form(fox_wav), headers=direct)).status == 202


@pytest.mark.parametrize(
    "configured,origin,status",
    [
        (["http://localhost:3000"], "http://localhost:3000", 202),
        (["HTTP://LOCALHOST:3000/"], "http://localhost:3000", 202),
        (["http://localhost:3000"], "http://localhost:3001", 403),
        (["*"], "https://anything.example", 202),
    ],
)
async def test_r36_allowed_origins_are_configurable(
    aiohttp_client: Any,
    make_settings: Any,
    fox_wav: Path,
    configured: list[str],
    origin: str,
    status: int,
) -> None:
    client = await idle_app(aiohttp_client, make_settings, allowed_origins=configured)
    resp = await client.post("/v1/jobs", data=audio_form(fox_wav), headers={"Origin": origin})
    assert resp.status == status, await resp.text()


async def test_r36_the_public_url_is_an_own_origin(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    """Behind a proxy that rewrites Host, the page's origin is the public URL's."""
    client = await idle_app(aiohttp_client, make_settings, public_url="https://sona.example/")
    ok = {"Origin": "https://sona.example"}
    assert (await client.post("/v1/jobs", data=audio_form(fox_wav), headers=ok)).status == 202
    bad = {"Origin": "https://sona.example:8443"}
    assert (await client.post("/v1/jobs", data=audio_form(fox_wav), headers=bad)).status == 403
