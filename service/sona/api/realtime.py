"""``GET /v1/realtime``: live transcription over a WebSocket, speaking OpenAI's
Realtime protocol for transcription sessions, as ``client.realtime.connect``
of the ``openai`` SDK does (docs/api.md, Live sessions). This module reads and
writes the socket; ``sona/live.py`` holds the session.

Every client event is answered in order: a bad one with an ``error`` event
(the session goes on); a limit that ends the session with an ``error`` event
and then a close code (below). API keys as on every route: the SDK sends
``Authorization: Bearer``; a browser, which cannot set headers on a WebSocket,
offers the subprotocols ``realtime`` and ``openai-insecure-api-key.KEY``."""

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
from sona.errors import InvalidRequest, ModelNotFound, NoEngine, SonaError, UpgradeRequired
from sona.keys import ENGINE, INTAKE, LIVE, MODELS, RUNTIME, SETTINGS, LiveEntry
from sona.live import LiveDeps, LiveLimit, LiveSession

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
    # "realtime" is the subprotocol OpenAI's browser clients offer beside their
    # key (api/middleware.py): a browser refuses an upgrade that picks none.
    ws = web.WebSocketResponse(
        max_msg_size=settings.live_max_frame_kb * 1024, heartbeat=30, protocols=("realtime",)
    )
    if not ws.can_prepare(request).ok:
        raise UpgradeRequired(
            "GET /v1/realtime is a WebSocket: connect with Upgrade: websocket "
            "(the openai SDK's client.realtime.connect does)"
        )
    await ws.prepare(request)
    sessions = app[LIVE].entries
    resumed = request.query.get("session_id")

    async def emit(event: dict[str, Any]) -> None:
        await _send(ws, event)

    if resumed is not None:
        session = await _resume(sessions, resumed, ws, emit, request.query.get("last_event_id"))
        if session is None:
            return ws
    elif len(sessions) >= settings.live_max_sessions:
        await _send(ws, ev.error("too_many_sessions", _too_many(settings.live_max_sessions)))
        await ws.close(code=TRY_AGAIN_LATER, message=b"too many live sessions")
        return ws
    else:
        rt = app[RUNTIME]
        try:
            callback_url, refine_model = await _job_options(request)
        except SonaError as exc:  # refused before anything is recorded
            await _send(ws, ev.error(exc.code, exc.message, param=exc.param))
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=exc.code.encode())
            return ws
        deps = LiveDeps(
            engine, app[MODELS], app[INTAKE], settings, rt.store, rt.events, rt.uploads, rt.notifier
        )
        session = LiveSession(deps, emit)
        await session.start(callback_url=callback_url, refine_model=refine_model)
        sessions[session.id] = LiveEntry(session, ws)
        log.info("live.opened", session=session.id, job_id=session.job_id)
        await session.send(_created(session))
    entry = sessions[session.id]
    entry.ws = ws
    done = await _serve(ws, session, settings.live_idle_timeout_s)
    if entry.ws is not ws:  # resumed on another socket meanwhile
        return ws
    if done or app[LIVE].stopping:
        await _end(app, session)
        await ws.close()
    else:  # dropped: the session waits for its client, a while
        session.detach()
        entry.ws = None
        entry.expiry = asyncio.create_task(_expire(app, session, settings.live_resume_grace_s))
        log.info("live.detached", session=session.id, grace_s=settings.live_resume_grace_s)
    return ws


async def _job_options(request: web.Request) -> tuple[str | None, str | None]:
    """The session's job options, Sona's own query parameters (fixed for the
    session, since its job is made when it opens): ``callback_url`` (its
    webhooks, checked as a job's) and ``refine_model`` (a second pass over the
    whole recording at the end, whose transcript replaces the session's)."""
    intake = request.app[INTAKE]
    callback_url = request.query.get("callback_url") or None
    await intake.check_callback(callback_url)
    refine = request.query.get("refine_model") or None
    if refine is not None:
        try:
            refine = await intake.known_model(refine)
        except ModelNotFound as exc:
            exc.param = "refine_model"
            raise
    return callback_url, refine


def _created(session: LiveSession) -> dict[str, Any]:
    shape = ev.session_shape(session.id, session.config, session.job_id)
    return ev.event("session.created", session=shape, audio_received_ms=session.received_ms)


async def _resume(
    sessions: dict[str, LiveEntry],
    session_id: str,
    ws: web.WebSocketResponse,
    emit: Any,
    last_event_id: str | None,
) -> LiveSession | None:
    entry = sessions.get(session_id)
    if entry is None:
        message = f"no session {session_id!r} is open to be resumed"
        await _send(ws, ev.error("session_not_found", message, param="session_id"))
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"no such session")
        return None
    if entry.expiry is not None:
        entry.expiry.cancel()
        entry.expiry = None
    old, entry.ws = entry.ws, ws  # first: the old socket's handler then leaves it be
    if old is not None:  # a half-dead connection the server has not noticed yet
        entry.session.detach()
        await old.close(code=WSCloseCode.POLICY_VIOLATION, message=b"resumed elsewhere")
    await _send(ws, _created(entry.session))
    await entry.session.attach(emit, last_event_id)
    log.info("live.resumed", session=session_id)
    return entry.session


async def _expire(app: web.Application, session: LiveSession, grace_s: float) -> None:
    await asyncio.sleep(grace_s)
    log.info("live.expired", session=session.id)
    await _end(app, session)


async def _end(app: web.Application, session: LiveSession) -> None:
    app[LIVE].entries.pop(session.id, None)
    await session.close()
    log.info("live.closed", session=session.id, seconds=round(session.seconds, 1))


def _too_many(limit: int) -> str:
    if limit == 0:
        return "live sessions are turned off on this server (live_max_sessions = 0)"
    return f"this server runs at most {limit} live sessions at once (live_max_sessions)"


async def _send(ws: web.WebSocketResponse, event: dict[str, Any]) -> None:
    if ws.closed:
        raise ConnectionResetError("the client's socket is closed")
    await ws.send_str(json.dumps(event, separators=(",", ":")))


async def _serve(ws: web.WebSocketResponse, session: LiveSession, idle_s: float) -> bool:
    """Read client events until the socket ends. True: the session is over (the
    client closed it normally, or a limit ended it); False: the client dropped."""
    while True:
        try:
            msg = await ws.receive(timeout=idle_s)
        except TimeoutError:
            message = f"no client event for {idle_s:g} s (live_idle_timeout_s): session ended"
            await session.send_error("idle_timeout", message)
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"idle timeout")
            return True
        if msg.type == WSMsgType.CLOSE:
            return msg.data in (WSCloseCode.OK, WSCloseCode.GOING_AWAY)
        if msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED):
            return False
        if msg.type == WSMsgType.ERROR:  # a frame past max_msg_size, a broken frame
            log.info("live.bad_frame", session=session.id, error=str(ws.exception()))
            return True  # aiohttp closed the socket (1009, 1002): not a network drop
        if msg.type != WSMsgType.TEXT:
            await session.send_error("invalid_event", "client events are JSON text messages")
            continue
        try:
            await _handle(session, msg.data)
        except LiveLimit as exc:
            await session.send_error(exc.code, exc.message)
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=exc.code.encode())
            return True


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
            shape = ev.session_shape(session.id, session.config, session.job_id)
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
    """on_shutdown: each session's committed turns are decoded and stored, its
    job completed, then its socket closed (1001, going away)."""
    app[LIVE].stopping = True
    for entry in list(app[LIVE].entries.values()):
        if entry.expiry is not None:
            entry.expiry.cancel()
        await _end(app, entry.session)
        if entry.ws is not None:
            await entry.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")
