"""``GET /v1/realtime``: live transcription over a WebSocket, speaking OpenAI's
Realtime protocol for transcription sessions, as ``client.realtime.connect``
of the ``openai`` SDK does (docs/api.md, Live sessions). This module reads and
writes the socket; ``sona/live.py`` holds the session.

Every client event is answered in order: a bad one with an ``error`` event
(the session goes on); a limit that ends the session with an ``error`` event
and then a close code (below). API keys as on every route: the SDK sends
``Authorization: Bearer``."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from typing import Any

import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from sona import realtime_events as ev
from sona.api.middleware import check_origin
from sona.errors import InvalidRequest, NoEngine, SonaError
from sona.keys import ENGINE, INTAKE, LIVE, MODELS, SETTINGS
from sona.live import LiveLimit, LiveSession

log = structlog.get_logger("sona.api")
routes = web.RouteTableDef()
TRY_AGAIN_LATER = 1013  # RFC 6455's registry: the server is overloaded


@routes.get("/v1/realtime")
async def realtime(request: web.Request) -> web.StreamResponse:
    app = request.app
    settings = app[SETTINGS]
    check_origin(request, always=True)  # a page elsewhere must not open one
    engine = app[ENGINE]
    if engine is None:
        raise NoEngine("this is an API node (--no-worker): it runs no model", param="model")
    ws = web.WebSocketResponse(max_msg_size=settings.live_max_frame_kb * 1024, heartbeat=30)
    await ws.prepare(request)
    sessions = app[LIVE]
    if len(sessions) >= settings.live_max_sessions:
        await _send(ws, ev.error("too_many_sessions", _too_many(settings.live_max_sessions)))
        await ws.close(code=TRY_AGAIN_LATER, message=b"too many live sessions")
        return ws

    async def emit(event: dict[str, Any]) -> None:
        await _send(ws, event)

    session = LiveSession(
        engine=engine,
        models=app[MODELS],
        intake=app[INTAKE],
        settings=settings,
        emit=emit,
    )
    sessions[session.id] = (session, ws)
    log.info("live.opened", session=session.id)
    try:
        await emit(
            ev.event("session.created", session=ev.session_shape(session.id, session.config, None))
        )
        await _serve(ws, session, settings.live_idle_timeout_s)
    finally:
        sessions.pop(session.id, None)
        await session.close(drain=not ws.closed)
        await ws.close()
        log.info("live.closed", session=session.id, seconds=round(session.seconds, 1))
    return ws


def _too_many(limit: int) -> str:
    if limit == 0:
        return "live sessions are turned off on this server (live_max_sessions = 0)"
    return f"this server runs at most {limit} live sessions at once (live_max_sessions)"


async def _send(ws: web.WebSocketResponse, event: dict[str, Any]) -> None:
    if not ws.closed:
        await ws.send_str(json.dumps(event, separators=(",", ":")))


async def _serve(ws: web.WebSocketResponse, session: LiveSession, idle_s: float) -> None:
    while True:
        try:
            msg = await ws.receive(timeout=idle_s)
        except TimeoutError:
            message = f"no client event for {idle_s:g} s (live_idle_timeout_s): session ended"
            await _send(ws, ev.error("idle_timeout", message))
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"idle timeout")
            return
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            return
        if msg.type == WSMsgType.ERROR:  # a frame past max_msg_size, a broken frame
            log.info("live.bad_frame", session=session.id, error=str(ws.exception()))
            return
        if msg.type != WSMsgType.TEXT:
            await _send(ws, ev.error("invalid_event", "client events are JSON text messages"))
            continue
        try:
            await _handle(session, msg.data)
        except LiveLimit as exc:
            await _send(ws, ev.error(exc.code, exc.message))
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=exc.code.encode())
            return


async def _handle(session: LiveSession, data: str) -> None:
    try:
        event = json.loads(data)
    except ValueError:
        await session.send_error("invalid_json", "a client event must be a JSON object")
        return
    if not isinstance(event, dict):
        await session.send_error("invalid_json", "a client event must be a JSON object")
        return
    about = event.get("event_id") if isinstance(event.get("event_id"), str) else None
    try:
        await _dispatch(session, event)
    except LiveLimit:
        raise
    except SonaError as exc:
        await session.send_error(exc.code, exc.message, param=exc.param, about=about)


async def _dispatch(session: LiveSession, event: dict[str, Any]) -> None:
    match event.get("type"):
        case "session.update":
            session.update(event.get("session"))
            shape = ev.session_shape(session.id, session.config, None)
            await session.send(ev.event("session.updated", session=shape))
        case "input_audio_buffer.append":
            await session.append(_audio(event.get("audio")))
        case "input_audio_buffer.commit":
            await session.commit()
        case "input_audio_buffer.clear":
            await session.clear()
        case kind:
            await session.send_error(
                "unknown_event",
                f"event type {kind!r} is not supported in a transcription session",
                param="type",
            )


def _audio(value: Any) -> bytes:
    if not isinstance(value, str):
        raise InvalidRequest("audio must be base64 text", param="audio")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("audio is not valid base64", param="audio") from None


async def close_all(app: web.Application) -> None:
    """on_shutdown: each session's committed turns are decoded and sent, then
    its socket is closed (1001, going away)."""
    sessions = list(app[LIVE].values())
    for session, ws in sessions:
        await session.close(drain=True)
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")
    if sessions:
        await asyncio.sleep(0)
