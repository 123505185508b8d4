"""service.client against test doubles: a real aiohttp server for the upload
(the daemon's own multipart parser) and httpx.MockTransport for the rest."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from sona.client import ApiError, ServiceUnreachable, SonaClient, SonaClientError

Handler = Callable[[httpx.Request], httpx.Response]


def job(status: str = "queued", progress: float = 0.0, **extra: Any) -> dict[str, Any]:
    return {"id": "j1", "object": "job", "status": status, "progress": progress, **extra}


def mock(handler: Handler, **kwargs: Any) -> SonaClient:
    return SonaClient("http://sona.test", transport=httpx.MockTransport(handler), **kwargs)


def error(status: int, code: str, message: str, **headers: str) -> httpx.Response:
    body = {"error": {"message": message, "type": "x", "code": code, "param": None}}
    return httpx.Response(status, json=body, headers=headers)


async def test_submit_streams_a_multipart_body_the_daemon_parses(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}

    async def create(request: web.Request) -> web.Response:
        seen["headers"] = dict(request.headers)
        form = await request.post()
        upload = form["file"]
        assert isinstance(upload, web.FileField)
        seen["file"] = (upload.filename, upload.file.read())
        seen["fields"] = {k: v for k, v in form.items() if k != "file"}
        return web.json_response(job(), status=202)

    app = web.Application(client_max_size=8 << 20)
    app.router.add_post("/v1/jobs", create)
    server = await aiohttp_server(app)
    audio = tmp_path / 'my "odd" name.wav'
    payload = bytes(range(256)) * 9000  # > 2 MiB: several read chunks
    audio.write_bytes(payload)
    async with SonaClient(str(server.make_url("/")), api_key="k1") as client:
        out = await client.submit(
            audio,
            idempotency_key="idem-1",
            model="tiny.en",
            word_timestamps=True,
            metadata={"ticket": 7},
            language=None,
        )
    assert out == job()
    assert seen["file"] == ("my %22odd%22 name.wav", payload)
    assert seen["fields"] == {
        "model": "tiny.en",
        "word_timestamps": "true",
        "metadata": '{"ticket": 7}',
    }
    assert seen["headers"]["Authorization"] == "Bearer k1"
    assert seen["headers"]["Idempotency-Key"] == "idem-1"
    assert "Transfer-Encoding" not in seen["headers"]  # sized up front, not chunked


async def test_submit_missing_file_is_a_client_error(tmp_path: Path) -> None:
    async with mock(lambda r: httpx.Response(500)) as client:
        with pytest.raises(SonaClientError, match="no such file") as info:
            await client.submit(tmp_path / "gone.wav")
    assert info.value.code == "file_not_found"


async def test_unreachable_names_the_url_and_how_to_start() -> None:
    async with SonaClient("http://127.0.0.1:9", timeout=5) as client:
        with pytest.raises(ServiceUnreachable) as info:
            await client.health()
    assert "unreachable at http://127.0.0.1:9" in str(info.value)
    assert "sona serve" in str(info.value)


async def test_timeout_is_service_unreachable() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    async with mock(slow, timeout=2) as client:
        with pytest.raises(ServiceUnreachable, match="did not answer within 2 s"):
            await client.job("j1")


async def test_error_body_becomes_api_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return error(429, "rate_limited", "slow down", **{"Retry-After": "3"})

    async with mock(handler) as client:
        with pytest.raises(ApiError) as info:
            await client.job("j1")
    exc = info.value
    assert (exc.status, exc.code, exc.message, exc.retry_after) == (
        429,
        "rate_limited",
        "slow down",
        3.0,
    )
    assert isinstance(exc, SonaClientError)


async def test_non_json_error_keeps_the_text() -> None:
    async with mock(lambda r: httpx.Response(502, text="<h1>Bad gateway</h1>")) as client:
        with pytest.raises(ApiError, match="Bad gateway") as info:
            await client.health()
    assert info.value.status == 502 and info.value.code is None


async def test_a_non_json_success_is_reported_not_crashed() -> None:
    async with mock(lambda r: httpx.Response(200, text="hello")) as client:
        with pytest.raises(SonaClientError, match="is that URL a Sona service"):
            await client.health()


async def test_routes_params_and_quoted_ids() -> None:
    calls: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append((request.method, str(request.url)))
        if request.url.path.endswith("/transcript"):
            return httpx.Response(200, text="hello world\n")
        if request.url.path == "/v1/jobs":
            return httpx.Response(200, json={"object": "list", "data": [], "has_more": False})
        return httpx.Response(200, json=job("cancelled"))

    async with mock(handler) as client:
        assert await client.transcript("a/../b", "srt") == "hello world\n"
        assert (await client.cancel("j1"))["status"] == "cancelled"
        assert (await client.jobs(status="completed", limit=5, before="j0"))["data"] == []
    assert calls == [
        ("GET", "http://sona.test/v1/jobs/a%2F..%2Fb/transcript?format=srt"),
        ("DELETE", "http://sona.test/v1/jobs/j1"),
        ("GET", "http://sona.test/v1/jobs?limit=5&status=completed&before=j0"),
    ]


def test_url_and_key_default_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SONA_URL", raising=False)
    assert SonaClient().base_url == "http://127.0.0.1:8765"
    monkeypatch.setenv("SONA_URL", "http://box:9000/")
    monkeypatch.setenv("SONA_API_KEY", "secret")
    client = SonaClient()
    assert client.base_url == "http://box:9000"
    assert client._http.headers["Authorization"] == "Bearer secret"


async def test_wait_reports_changes_and_returns_the_finished_job() -> None:
    states = iter(
        [job("queued"), job("processing", 0.5), job("processing", 0.5), job("completed", 1.0)]
    )
    seen: list[tuple[str, float]] = []

    async def on_progress(j: dict[str, Any]) -> None:
        seen.append((j["status"], j["progress"]))

    async with mock(lambda r: httpx.Response(200, json=next(states))) as client:
        done = await client.wait("j1", timeout_s=10, on_progress=on_progress, poll_s=0.01)
    assert done["status"] == "completed"
    assert seen == [("queued", 0.0), ("processing", 0.5), ("completed", 1.0)]


async def test_wait_gives_up_at_the_timeout_with_the_current_job() -> None:
    async with mock(lambda r: httpx.Response(200, json=job("processing", 0.2))) as client:
        current = await client.wait("j1", timeout_s=0.3, poll_s=0.05)
        once = await client.wait("j1", timeout_s=0)
    assert current["status"] == once["status"] == "processing"


async def test_wait_unknown_job_raises_api_error() -> None:
    async with mock(lambda r: error(404, "not_found", "job nope not found")) as client:
        with pytest.raises(ApiError) as info:
            await client.wait("nope", timeout_s=1)
    assert info.value.status == 404


async def test_wait_does_not_mistake_a_callback_timeout_for_its_deadline() -> None:
    def on_progress(j: dict[str, Any]) -> None:
        raise TimeoutError("the callback's own")

    async with mock(lambda r: httpx.Response(200, json=job("processing", 0.2))) as client:
        with pytest.raises(TimeoutError, match="the callback's own"):
            await client.wait("j1", timeout_s=10, on_progress=on_progress)
