"""Live sessions' limits and bad input, against a running daemon: each is a
clear ``error`` event (the session goes on) or an ``error`` and a close code
(the session ends), and nothing else is disturbed. API keys as on every
route, through the ``openai`` SDK's realtime client too."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import openai
import pytest

from tests.conftest import AUDIO, Daemon, start_daemon
from tests.test_realtime import pcm24k

KEY = "live-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    env = {
        "SONA_API_KEYS": json.dumps([KEY]),
        "SONA_LIVE_MAX_SESSIONS": "2",
        "SONA_LIVE_IDLE_TIMEOUT_S": "2",
        "SONA_LIVE_MAX_FRAME_KB": "16",
        "SONA_LIVE_MAX_AHEAD_S": "2",
        "SONA_LIVE_MAX_SESSION_S": "12",
        "SONA_LIVE_RESUME_GRACE_S": "0",
    }
    d = start_daemon(tmp_path_factory.mktemp("lim") / "data", "--model", "tiny.en", env=env)
    yield d
    d.stop()
    if d.proc.stdout:
        d.proc.stdout.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def url(daemon: Daemon) -> str:
    return f"ws://127.0.0.1:{daemon.port}/v1/realtime"


async def connect(http: aiohttp.ClientSession, daemon: Daemon) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(url(daemon), headers=AUTH)
    assert (await ws.receive_json())["type"] == "session.created"
    return ws


async def send(ws: aiohttp.ClientWebSocketResponse, kind: str, **fields: Any) -> None:
    await ws.send_str(json.dumps({"type": kind, **fields}))


async def error_of(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    while True:
        event = await ws.receive_json(timeout=30)
        if event["type"] == "error":
            return dict(event["error"])


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> int:
    while True:
        msg = await ws.receive(timeout=30)
        if msg.type == aiohttp.WSMsgType.CLOSE:
            return int(msg.data)
        if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            return int(ws.close_code or 0)


async def test_without_a_key_the_upgrade_is_refused(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await http.ws_connect(url(daemon))
    assert caught.value.status == 401


async def test_another_origin_is_refused(daemon: Daemon, http: aiohttp.ClientSession) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await http.ws_connect(url(daemon), headers={**AUTH, "Origin": "https://evil.example"})
    assert caught.value.status == 403


async def test_a_browser_passes_its_key_as_a_subprotocol(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    """As OpenAI's browser clients do (a browser's WebSocket sets no headers):
    the server picks ``realtime``, never echoes the key, still checks Origin."""
    own = {"Origin": f"http://127.0.0.1:{daemon.port}"}
    protocols = ("realtime", f"openai-insecure-api-key.{KEY}")
    ws = await http.ws_connect(url(daemon), protocols=protocols, headers=own)
    assert ws.protocol == "realtime"
    assert (await ws.receive_json())["type"] == "session.created"
    await ws.close()
    for offered, headers, status in [
        (("realtime", "openai-insecure-api-key.wrong"), own, 401),
        (("realtime",), own, 401),
        (protocols, {"Origin": "https://evil.example"}, 403),
    ]:
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await http.ws_connect(url(daemon), protocols=offered, headers=headers)
        assert caught.value.status == status, offered
    # only on an upgrade: a plain request with the header is still keyless
    async with http.get(
        f"http://127.0.0.1:{daemon.port}/v1/jobs",
        headers={"Sec-WebSocket-Protocol": protocols[1]},
    ) as resp:
        assert resp.status == 401


async def test_the_sdk_passes_its_key(daemon: Daemon) -> None:
    def client(key: str) -> openai.AsyncOpenAI:
        ws_url = f"ws://127.0.0.1:{daemon.port}/v1"
        return openai.AsyncOpenAI(
            base_url=f"{daemon.url}/v1", websocket_base_url=ws_url, api_key=key
        )

    wrong = client("wrong-key")
    with pytest.raises(Exception, match="401"):
        async with wrong, wrong.realtime.connect(extra_query={"intent": "transcription"}):
            pass
    right = client(KEY)
    async with right, right.realtime.connect(extra_query={"intent": "transcription"}) as c:
        assert (await c.recv()).type == "session.created"


async def test_bad_events_are_errors_and_the_session_goes_on(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    ws = await connect(http, daemon)
    await ws.send_str("{not json")
    assert (await error_of(ws))["code"] == "invalid_json"
    await send(ws, "input_audio_buffer.append", audio="***", event_id="evt_1")
    bad = await error_of(ws)
    assert (bad["code"], bad["param"], bad["event_id"]) == ("invalid_request", "audio", "evt_1")
    await send(ws, "input_audio_buffer.append", audio=base64.b64encode(b"abc").decode())
    assert (await error_of(ws))["code"] == "invalid_request"  # odd byte count
    await send(ws, "response.create")
    assert (await error_of(ws))["code"] == "unknown_event"
    pcmu = {"type": "transcription", "audio": {"input": {"format": {"type": "audio/pcmu"}}}}
    await send(ws, "session.update", session=pcmu)
    assert (await error_of(ws))["code"] == "unsupported_audio_format"
    await send(ws, "session.update", session={"type": "realtime"})
    assert (await error_of(ws))["param"] == "session.type"
    await send(ws, "input_audio_buffer.commit")
    assert (await error_of(ws))["code"] == "invalid_request"  # nothing to commit
    await send(ws, "session.update", session={"type": "transcription"})
    assert (await ws.receive_json(timeout=30))["type"] == "session.updated"  # still serving
    await ws.close()


async def test_past_max_sessions_the_next_is_refused(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    first, second = await connect(http, daemon), await connect(http, daemon)
    third = await http.ws_connect(url(daemon), headers=AUTH)
    assert (await error_of(third))["code"] == "too_many_sessions"
    assert await closed_with(third) == 1013
    await send(first, "session.update", session={"type": "transcription"})
    assert (await first.receive_json(timeout=30))["type"] == "session.updated"
    await first.close()
    await second.close()


async def test_an_idle_session_ends(daemon: Daemon, http: aiohttp.ClientSession) -> None:
    ws = await connect(http, daemon)
    assert (await error_of(ws))["code"] == "idle_timeout"
    assert await closed_with(ws) == 1008


async def test_an_oversized_frame_closes_with_1009(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    ws = await connect(http, daemon)
    audio = base64.b64encode(bytes(20 * 1024)).decode()
    await send(ws, "input_audio_buffer.append", audio=audio)
    assert await closed_with(ws) == 1009


async def test_faster_than_real_time_is_refused_past_the_allowance(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    ws = await connect(http, daemon)
    pcm = pcm24k(AUDIO / "fox.wav")  # 7 s, sent at once: 2 s ahead is allowed
    for at in range(0, len(pcm), 4800):
        await send(
            ws, "input_audio_buffer.append", audio=base64.b64encode(pcm[at : at + 4800]).decode()
        )
    error = await error_of(ws)
    assert error["code"] == "too_fast" and "live_max_ahead_s" in error["message"]
    await send(ws, "session.update", session={"type": "transcription"})
    while (await ws.receive_json(timeout=30))["type"] != "session.updated":
        pass
    await ws.close()


@pytest.mark.slow  # a real daemon or model for 10 s or more
async def test_a_session_past_its_length_ends(daemon: Daemon, http: aiohttp.ClientSession) -> None:
    ws = await connect(http, daemon)
    frame = base64.b64encode(bytes(9_600)).decode()  # 200 ms of silence
    for _ in range(61):  # at real time; 12 s allowed, the 61st frame is past it
        await send(ws, "input_audio_buffer.append", audio=frame)
        await asyncio.sleep(0.2)
    assert (await error_of(ws))["code"] == "session_too_long"
    assert await closed_with(ws) == 1008
