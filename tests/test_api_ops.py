"""Operations: auth, the loopback Host check, request ids, retention (F2, F4, A9)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from structlog.testing import capture_logs

from sona.app import create_app
from sona.keys import STORE, WORKER
from tests.helpers import idle_app, stalled_upload, submit, wait_done


async def test_r23_api_keys_guard_everything_but_probes(
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
    # The scheme is case-insensitive (RFC 9110); a key without it is refused.
    for header in ("bearer s3cret", "BEARER s3cret", "Bearer   s3cret"):
        assert (await client.get("/v1/jobs", headers={"Authorization": header})).status == 200
    for header in ("s3cret", "Basic s3cret", "Bearer", "Bearers3cret", "Token s3cret"):
        refused = await client.get("/v1/jobs", headers={"Authorization": header})
        assert refused.status == 401, header
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")


async def test_r23_foreign_host_header_is_refused_on_loopback(
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
    done = await wait_done(client, job["id"])
    assert done["status"] == "completed" and done["segments_done"] > 0
    uploads = make_settings().data_dir / "uploads"
    assert len(list(uploads.iterdir())) == 1
    await client.close()
    # Restart with zero retention and no worker: the start-up sweep removes the
    # finished job (row, segments, file) and keeps the queued one.
    client = await idle_app(aiohttp_client, make_settings, retention_hours=0)
    assert (await client.get(f"/v1/jobs/{job['id']}")).status == 404
    assert await client.app[STORE].segments(job["id"]) == []
    assert list(uploads.iterdir()) == []
    waiting = await submit(client, fox_wav)
    await client.close()
    client = await idle_app(aiohttp_client, make_settings, retention_hours=0)
    assert (await client.get(f"/v1/jobs/{waiting['id']}")).status == 200
    assert len(list(uploads.iterdir())) == 1


async def test_health_and_ready_report_a_worker_that_is_not_running(
    aiohttp_client: Any, make_settings: Any, tmp_path: Path
) -> None:
    """A worker that ended is not hidden behind "ok" (issue 10): /health is 503
    and /ready says why. A drained worker stopped on purpose: alive, not ready."""
    client = await aiohttp_client(create_app(make_settings(model=None)))
    worker = client.app[WORKER]
    await poll_until(lambda: worker.state == "running")
    health = await client.get("/health")
    assert health.status == 200 and (await health.json())["worker"] == "running"
    task = next(t for t in asyncio.all_tasks() if t.get_name() == "sona-worker")
    task.cancel()  # as if the worker's task had died
    await asyncio.gather(task, return_exceptions=True)
    health = await client.get("/health")
    body = await health.json()
    assert health.status == 503 and body["status"] == "unhealthy" and body["worker"] == "stopped"
    ready = await client.get("/ready")
    body = await ready.json()
    assert ready.status == 503 and body["worker"] == "stopped" and not body["worker_running"]

    drained = await idle_app(aiohttp_client, make_settings, data_dir=tmp_path / "other")
    await poll_until(lambda: drained.app[WORKER].state == "drained")  # its loop has ended
    health = await drained.get("/health")
    assert health.status == 200 and (await health.json())["worker"] == "drained"
    assert (await (await drained.get("/ready")).json())["worker"] == "drained"


async def poll_until(cond: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def test_r19_client_disconnect_mid_upload_is_logged_as_aborted_without_traceback(
    aiohttp_client: Any, make_settings: Any
) -> None:
    client = await aiohttp_client(create_app(make_settings(model=None)))
    uploads = make_settings().data_dir / "uploads"
    assert (await client.get("/health")).status == 200  # warm: lazily opened things exist
    fds, tasks = len(os.listdir("/proc/self/fd")), len(asyncio.all_tasks())
    with capture_logs() as logs:
        writer = await stalled_upload(client.server.host, client.server.port)
        deadline = time.monotonic() + 30
        while not any(uploads.iterdir()):
            assert time.monotonic() < deadline, "the upload never started"
            await asyncio.sleep(0.02)
        writer.close()
        await writer.wait_closed()
        while not any(e["event"] == "request.aborted" for e in logs):
            assert time.monotonic() < deadline + 30, logs
            await asyncio.sleep(0.05)
    # Descriptors and tasks back to where they were (the upload file, the
    # connection and its handler task are gone).
    while len(os.listdir("/proc/self/fd")) > fds or len(asyncio.all_tasks()) > tasks:
        assert time.monotonic() < deadline + 60, (os.listdir("/proc/self/fd"), fds)
        await asyncio.sleep(0.05)
    assert not any(uploads.iterdir())
    aborted = [e for e in logs if e["event"] == "request.aborted"]
    assert aborted[0]["log_level"] == "info" and "exc_info" not in aborted[0]
    assert not [e for e in logs if e["event"] == "request.crashed"]
