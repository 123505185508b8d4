"""Small async helpers the API tests share."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient

from sona.app import create_app
from sona.keys import WORKER


def audio_form(
    path: Path | None = None, *, data: bytes | None = None, filename: str = "a.wav", **fields: str
) -> aiohttp.FormData:
    form = aiohttp.FormData()
    body = data if data is not None else Path(path).read_bytes()  # type: ignore[arg-type]
    # A BytesIO, not raw bytes: aiohttp warns on large raw bodies.
    form.add_field("file", io.BytesIO(body), filename=filename, content_type="audio/wav")
    for key, value in fields.items():
        form.add_field(key, value)
    return form


async def submit(client: TestClient, path: Path, **fields: str) -> dict[str, Any]:
    resp = await client.post("/v1/jobs", data=audio_form(path, filename=path.name, **fields))
    assert resp.status == 202, await resp.text()
    return await resp.json()


async def poll(
    client: TestClient, job_id: str, until: Callable[[dict[str, Any]], bool], timeout: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = await (await client.get(f"/v1/jobs/{job_id}")).json()
        if until(job):
            return job
        assert time.monotonic() < deadline, f"timed out waiting; last state {job}"
        await asyncio.sleep(0.05)


async def wait_done(client: TestClient, job_id: str, timeout: float = 120) -> dict[str, Any]:
    return await poll(
        client, job_id, lambda j: j["status"] in ("completed", "failed", "cancelled"), timeout
    )


async def idle_app(
    aiohttp_client: Any, make_settings: Any, **overrides: Any
) -> TestClient[web.Request, web.Application]:
    """An app with no model loaded and its worker drained: jobs stay queued until
    a test claims them by hand, and nothing needs inference."""
    client = await aiohttp_client(create_app(make_settings(model=None, **overrides)))
    await client.app[WORKER].drain(0)
    return client


async def stalled_upload(host: str, port: int) -> asyncio.StreamWriter:
    """A raw ``POST /v1/jobs`` whose WAV body has begun (100 KB of it) and then
    stops with more declared: it holds an upload slot, and its partial file
    stays, until the caller closes the writer."""
    _, writer = await asyncio.open_connection(host, port)
    part = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        + b"RIFF\x00\x00\x00\x00WAVE"
        + b"\x00" * 100_000
    )
    writer.write(
        b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n"
        + f"Content-Length: {len(part) + 500_000}\r\n\r\n".encode()
        + part
    )
    await writer.drain()
    return writer
