"""Limits against hostile clients (F5; RELIABILITY 18): slow request heads,
too many connections, uploads and requests from one client, and asyncio's own
error flood. Connection-level limits live in the daemon's listener, so those
tests run a real ``sona serve``; slow clients come from other loopback
addresses (127.0.0.2…), which Linux routes to lo like 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from structlog.testing import capture_logs

from sona.keys import SETTINGS
from sona.loop_errors import LoopErrorLog
from tests.helpers import audio_form, idle_app, stalled_upload


async def _open_from(source: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def _closed_by_server(reader: asyncio.StreamReader, timeout: float) -> bool:
    """True when the server ends the connection within ``timeout``: a FIN, or a
    reset (Linux answers a close with unread trickled bytes in the buffer with RST)."""
    try:
        async with asyncio.timeout(timeout):
            return await reader.read(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


async def _trickle(writer: asyncio.StreamWriter, head: bytes, every_s: float) -> None:
    """Send ``head`` one byte at a time until the server closes the socket."""
    for byte in head:
        if writer.is_closing():
            return
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except (ConnectionResetError, BrokenPipeError):
            return
        await asyncio.sleep(every_s)


def test_r18_slow_clients_are_closed_after_the_header_timeout_while_a_fast_client_is_served(
    daemon_factory: Any,
) -> None:
    d = daemon_factory("--model", "tiny.en", env={"SONA_HEADER_TIMEOUT_S": "2"})

    async def run() -> None:
        slow = [await _open_from(f"127.0.0.{2 + i % 4}", d.port) for i in range(40)]
        trickles = [
            asyncio.create_task(_trickle(w, b"GET /health HTTP/1.1\r\nHost: localhost\r\n", 1.0))
            for _, w in slow
        ]
        try:
            async with aiohttp.ClientSession() as session:
                for _ in range(5):  # served while the slow ones trickle
                    async with session.get(d.url + "/health") as resp:
                        assert resp.status == 200
            # The 2 s deadline, with a generous margin for a loaded machine.
            closed = await asyncio.gather(*(_closed_by_server(r, 30) for r, _ in slow))
            assert all(closed), f"{closed.count(False)} slow connections still open"
        finally:  # no socket outlives the test (a later gc would report it)
            for task in trickles:
                task.cancel()
            for _, w in slow:
                w.close()

    asyncio.run(run())
    assert '"connection.header_timeout"' in d.stderr()


def test_r18_connections_per_client_are_capped_with_429_and_retry_after(
    daemon_factory: Any,
) -> None:
    d = daemon_factory(env={"SONA_MAX_CONNECTIONS_PER_CLIENT": "3"})

    async def run() -> None:
        held = [await _open_from("127.0.0.5", d.port) for _ in range(3)]
        reader, writer = await _open_from("127.0.0.5", d.port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        async with asyncio.timeout(30):
            answer = await reader.read()
        assert answer.startswith(b"HTTP/1.1 429 ") and b"Retry-After: 1" in answer
        assert b'"code": "busy"' in answer
        async with (  # another client is served
            aiohttp.ClientSession() as session,
            session.get(d.url + "/health") as resp,
        ):
            assert resp.status == 200
        for _, w in [*held, (reader, writer)]:
            w.close()

    asyncio.run(run())


async def test_r18_too_many_concurrent_uploads_is_429_with_retry_after(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    client = await idle_app(aiohttp_client, make_settings, max_uploads=2)
    stalled = [await stalled_upload("127.0.0.1", client.server.port) for _ in range(2)]
    uploads = make_settings().data_dir / "uploads"
    deadline = time.monotonic() + 30
    while len(list(uploads.iterdir())) < 2:  # both are streaming to disk
        assert time.monotonic() < deadline, "the stalled uploads never started"
        await asyncio.sleep(0.05)
    resp = await client.post("/v1/jobs", data=audio_form(fox_wav))
    body = await resp.json()
    assert resp.status == 429 and body["error"]["code"] == "busy", body
    assert int(resp.headers["Retry-After"]) >= 1
    assert (await client.get("/v1/jobs")).status == 200  # other requests still served
    for w in stalled:
        w.close()
    deadline = time.monotonic() + 30
    while True:  # slots come back when the uploads end
        resp = await client.post("/v1/jobs", data=audio_form(fox_wav))
        if resp.status == 202:
            break
        assert resp.status == 429 and time.monotonic() < deadline
        await asyncio.sleep(0.1)


async def test_r18_uploads_per_client_are_capped(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    client = await idle_app(aiohttp_client, make_settings, max_uploads_per_client=1)
    stalled = await stalled_upload("127.0.0.1", client.server.port)
    uploads = make_settings().data_dir / "uploads"
    deadline = time.monotonic() + 30
    while not any(uploads.iterdir()):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    resp = await client.post("/v1/jobs", data=audio_form(fox_wav))
    assert resp.status == 429 and "Retry-After" in resp.headers
    assert "this client" in (await resp.json())["error"]["message"]
    stalled.close()


async def test_rate_limit_per_client_is_429_with_retry_after(
    aiohttp_client: Any, make_settings: Any
) -> None:
    client = await idle_app(aiohttp_client, make_settings, rate_limit_per_s=0.5, rate_limit_burst=3)
    statuses = [(await client.get("/v1/jobs")).status for _ in range(3)]
    assert statuses == [200, 200, 200]
    refused = await client.get("/v1/jobs")
    assert refused.status == 429
    assert (await refused.json())["error"]["type"] == "rate_limit_error"
    assert 1 <= int(refused.headers["Retry-After"]) <= 2
    assert (await client.get("/health")).status == 200  # probes are never limited


async def test_rate_limit_is_keyed_by_api_key(aiohttp_client: Any, make_settings: Any) -> None:
    from pydantic import SecretStr

    client = await idle_app(
        aiohttp_client,
        make_settings,
        rate_limit_per_s=0.1,
        rate_limit_burst=1,
        api_keys=[SecretStr("k1"), SecretStr("k2")],
    )
    one = {"Authorization": "Bearer k1"}
    two = {"Authorization": "Bearer k2"}
    assert (await client.get("/v1/jobs", headers=one)).status == 200
    assert (await client.get("/v1/jobs", headers=one)).status == 429
    assert (await client.get("/v1/jobs", headers=two)).status == 200  # its own bucket


def test_asyncio_error_flood_is_rate_limited_into_the_log() -> None:
    now = [0.0]
    handler = LoopErrorLog(limit=5, interval_s=10, clock=lambda: now[0])
    loop = asyncio.new_event_loop()
    try:
        context = {"message": "socket.accept() out of system resource", "exception": OSError(24)}
        with capture_logs() as logs:
            for _ in range(10_000):
                handler(loop, context)
            now[0] = 11.0
            handler(loop, context)
    finally:
        loop.close()
    assert len(logs) == 6
    assert all(e["event"] == "loop.error" and e["log_level"] == "error" for e in logs)
    assert logs[0]["message"] == "socket.accept() out of system resource"
    assert logs[-1]["suppressed"] == 10_000 - 5
    structlog.reset_defaults()


def test_header_timeout_does_not_cut_a_slow_body_or_a_long_response(
    daemon_factory: Any, fox_wav: Path
) -> None:
    """The head deadline is for heads only: an upload that takes longer than
    it, sent promptly in pieces, is stored."""
    d = daemon_factory(env={"SONA_HEADER_TIMEOUT_S": "1"})
    audio = fox_wav.read_bytes()

    async def run() -> int:
        async def body():  # type: ignore[no-untyped-def]
            for i in range(0, len(audio), len(audio) // 4 + 1):
                yield audio[i : i + len(audio) // 4 + 1]
                await asyncio.sleep(0.6)  # 4 pieces: ~2.4 s in all, past the 1 s deadline

        form = aiohttp.FormData()
        form.add_field("file", body(), filename="fox.wav", content_type="audio/wav")
        async with (
            aiohttp.ClientSession() as session,
            session.post(d.url + "/v1/jobs", data=form) as resp,
        ):
            return resp.status

    assert asyncio.run(run()) == 202


# RELIABILITY 29: a body stalled anywhere, not just in the file part, hits the
# idle timeout; a few addresses cannot hold every upload slot.
_FIELD = b'--b\r\nContent-Disposition: form-data; name="language"\r\n\r\nen\r\n'
_FILE = (
    b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
    + b"RIFF\x00\x00\x00\x00WAVE"
    + b"\x00" * 4000
)
STALLS = {  # where the body stops: (path, content type, the bytes sent before it)
    "preamble": ("/v1/jobs", "multipart/form-data; boundary=b", b""),
    "preamble_text": ("/v1/jobs", "multipart/form-data; boundary=b", b"some preamble"),
    "part_headers": (
        "/v1/jobs",
        "multipart/form-data; boundary=b",
        b'--b\r\nContent-Disposition: form-data; name="lang',
    ),
    "text_field": (
        "/v1/jobs",
        "multipart/form-data; boundary=b",
        b'--b\r\nContent-Disposition: form-data; name="language"\r\n\r\ne',
    ),
    "between_parts": ("/v1/jobs", "multipart/form-data; boundary=b", _FIELD + b"--b"),
    "file_part": ("/v1/jobs", "multipart/form-data; boundary=b", _FIELD + _FILE),
    "json": ("/v1/jobs", "application/json", b'{"url": "http://exa'),
    "openai": ("/v1/audio/transcriptions", "multipart/form-data; boundary=b", _FIELD),
    "model_load": ("/v1/models/load", "application/json", b'{"mod'),
}


async def _stalled_body(
    port: int, path: str, content_type: str, sent: bytes, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A POST declaring 100 KB more than it sends, then silent."""
    reader, writer = await _open_from(source, port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(sent) + 100_000}\r\n\r\n".encode()
        + sent
    )
    await writer.drain()
    return reader, writer


async def _answer_then_close(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection."""
    async with asyncio.timeout(timeout):
        return await reader.read()


@pytest.mark.parametrize("where", sorted(STALLS))
@pytest.mark.slow  # a real daemon or model for 10 s or more
async def test_r29_a_body_stalled_anywhere_is_408_and_closed(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path, where: str
) -> None:
    client = await idle_app(aiohttp_client, make_settings, upload_idle_timeout_s=1, max_uploads=1)
    path, content_type, sent = STALLS[where]
    reader, writer = await _stalled_body(client.server.port, path, content_type, sent)
    try:
        # The 1 s window, with a generous margin for a loaded machine; the
        # server answers and closes on its own (the client never sends the rest).
        answer = await _answer_then_close(reader, 30)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:300]
    assert b'"code": "upload_timeout"' in answer
    # The one upload slot is free again, and nothing partial stays on disk.
    assert (await client.post("/v1/jobs", data=audio_form(fox_wav))).status == 202
    uploads = make_settings().data_dir / "uploads"
    assert not [p for p in uploads.iterdir() if p.suffix == ".part"]


async def test_r29_a_body_trickling_a_byte_at_a_time_is_cut(
    aiohttp_client: Any, make_settings: Any
) -> None:
    client = await idle_app(aiohttp_client, make_settings, upload_idle_timeout_s=1)
    reader, writer = await _stalled_body(
        client.server.port, "/v1/jobs", "multipart/form-data; boundary=b", b""
    )
    trickle = asyncio.create_task(_trickle(writer, _FIELD * 100, 0.05))
    try:
        answer = await _answer_then_close(reader, 30)
    finally:
        trickle.cancel()
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:300]


@pytest.mark.slow  # a real daemon or model for 10 s or more
async def test_r29_stalled_uploads_from_a_few_addresses_do_not_lock_out_another(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    """The report's attack: 64 zero-byte uploads from four addresses. Each
    address gets its per-client share of the slots (the rest are 429 at once),
    and a fifth address still uploads, through both submitting routes."""
    client = await idle_app(aiohttp_client, make_settings, sync_wait_s=0.5)
    settings = client.app[SETTINGS]
    assert 4 * settings.max_uploads_per_client < settings.max_uploads  # the design
    port = client.server.port
    stalled = [
        await _stalled_body(port, "/v1/jobs", "multipart/form-data; boundary=b", b"", source)
        for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
        for _ in range(16)
    ]

    async def first_line(reader: asyncio.StreamReader) -> bytes:
        try:
            async with asyncio.timeout(10):
                return await reader.readline()
        except TimeoutError:
            return b""  # still holding its upload slot

    try:
        heads = await asyncio.gather(*(first_line(r) for r, _ in stalled))
        refused = sum(h.startswith(b"HTTP/1.1 429 ") for h in heads)
        assert refused == 4 * (16 - settings.max_uploads_per_client), heads
        await _upload_from_another_address(port, fox_wav)
    finally:
        for _, writer in stalled:
            writer.close()


async def _upload_from_another_address(port: int, fox_wav: Path) -> None:
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.6", 0))
    async with aiohttp.ClientSession(connector=connector) as other:
        url = f"http://127.0.0.1:{port}"
        async with other.post(url + "/v1/jobs", data=audio_form(fox_wav)) as resp:
            assert resp.status == 202, await resp.text()
        form = audio_form(fox_wav)
        async with other.post(url + "/v1/audio/transcriptions", data=form) as resp:
            # Its upload is stored and its job queued; with no worker in this
            # app it then waits out sync_wait_s (a 429 about the queue).
            assert "uploads" not in (await resp.json())["error"]["message"]
        jobs = (await (await other.get(url + "/v1/jobs")).json())["data"]
        assert len(jobs) == 2, jobs


def test_r29_connections_from_a_few_addresses_cannot_fill_the_listener(
    daemon_factory: Any,
) -> None:
    """Each address gets max_connections_per_client; the listener as a whole
    holds max_connections (one more is refused at once, from anyone), and a
    handful of addresses at their cap leave room for everyone else."""
    env = {"SONA_MAX_CONNECTIONS": "16", "SONA_MAX_CONNECTIONS_PER_CLIENT": "2"}
    d = daemon_factory(env=env)

    async def refused(reader: asyncio.StreamReader) -> bool:
        try:
            async with asyncio.timeout(3):
                return (await reader.readline()).startswith(b"HTTP/1.1 429 ")
        except TimeoutError:
            return False  # held open

    async def health_from(source: str) -> bytes:
        reader, writer = await _open_from(source, d.port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(30):
            answer = await reader.read()
        writer.close()
        return answer

    async def run() -> None:
        few = [await _open_from(f"127.0.0.{2 + i % 4}", d.port) for i in range(24)]
        try:
            flags = await asyncio.gather(*(refused(r) for r, _ in few))
            assert flags.count(True) == 24 - 4 * 2, flags  # two held per address
            assert (await health_from("127.0.0.9")).startswith(b"HTTP/1.1 200 ")
            # Eight more addresses fill the listener: then anyone is refused.
            more = [await _open_from(f"127.0.1.{1 + i // 2}", d.port) for i in range(8)]
            assert not any(await asyncio.gather(*(refused(r) for r, _ in more)))
            answer = await health_from("127.0.0.10")
            assert answer.startswith(b"HTTP/1.1 429 ") and b"too many connections" in answer
            for _, w in more:
                w.close()
        finally:
            for _, w in few:
                w.close()

    asyncio.run(run())


def test_the_connection_budget_fits_the_descriptor_limit() -> None:
    import resource

    from sona.api.connections import FD_RESERVE, descriptor_budget

    assert descriptor_budget(64) == 64
    with capture_logs() as logs:
        budget = descriptor_budget(10**9)  # more than any hard limit here
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]  # raised as far as it goes
    assert budget == soft - FD_RESERVE
    assert logs[0]["event"] == "connection.fd_limit" and logs[0]["using"] == budget
    structlog.reset_defaults()
