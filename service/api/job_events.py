"""Server-Sent Events for one job (A5): ``GET /v1/jobs/{id}/events``.

The store is the source of truth. ``follow`` subscribes to the in-process
``EventHub`` first, then reads the job and its segments from the store, and
reads again whenever the hub wakes it or a poll interval passes (a worker in
another process publishes nothing here). So a client that connects late, or
reconnects with ``Last-Event-ID``, misses nothing, and live events only make it
prompt. ``follow`` knows nothing of HTTP: the OpenAI streaming code can share it.

Wire format, one SSE event per update:

* ``status``   the job object (A2); on connect and on every status change
* ``progress`` ``{progress, processed_seconds, duration, segments_done}``
* ``segment``  the segment as in verbose_json (plus ``speaker``, ``words`` when
  present), with ``id: <index + 1>`` so ``Last-Event-ID: N`` resumes after it
* ``completed`` | ``failed`` | ``cancelled``  the job object; the stream ends

and a ``: ping`` comment after ``HEARTBEAT_S`` of silence, so proxies keep the
connection open."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import structlog
from aiohttp import web

from sona.api.schemas import job_out
from sona.errors import InvalidRequest, NotFound
from sona.events import JobUpdate, follow
from sona.formats import render
from sona.jobs import Job, Segment, validate_job_id
from sona.keys import EVENTS, STORE

log = structlog.get_logger("sona.api")
routes = web.RouteTableDef()

HEARTBEAT_S = 15.0
PING = b": ping\n\n"


def segment_out(job: Job, seg: Segment) -> dict[str, Any]:
    """The segment exactly as verbose_json shows it (render owns that shape), with
    its words attached when word timestamps were asked for."""
    body = json.loads(render(job, [seg], "verbose_json")[0])
    out: dict[str, Any] = body["segments"][0]
    if "words" in body:
        out["words"] = body["words"]
    return out


def progress_out(job: Job) -> dict[str, Any]:
    out = job_out(job)
    return {k: out[k] for k in ("progress", "processed_seconds", "duration", "segments_done")}


def sse_frame(event: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    # json.dumps never emits a raw newline, so the payload is one data: line.
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def frame_for(update: JobUpdate) -> bytes:
    """The SSE bytes for one update (not for ``idle``)."""
    if update.segment is not None:
        seg = update.segment
        return sse_frame("segment", segment_out(update.job, seg), seg.index + 1)
    if update.type == "progress":
        return sse_frame("progress", progress_out(update.job))
    return sse_frame(update.type, job_out(update.job))


async def sse_frames(
    updates: AsyncIterator[JobUpdate], *, heartbeat_s: float = HEARTBEAT_S
) -> AsyncIterator[bytes]:
    """Bytes to send for ``updates``: a frame per update, a ping after
    ``heartbeat_s`` of silence, and ``b""`` for an idle step with nothing to send
    (so the caller still gets a turn to check its connection)."""
    loop = asyncio.get_running_loop()
    last_sent = loop.time()
    async for update in updates:
        if update.type != "idle":
            chunk = frame_for(update)
        elif loop.time() - last_sent >= heartbeat_s:
            chunk = PING
        else:
            yield b""
            continue
        last_sent = loop.time()
        yield chunk


def last_event_id(request: web.Request) -> int:
    """``after`` for ``follow``: a client that saw segment id N (index N - 1)
    resumes with index N."""
    if "Last-Event-ID" not in request.headers:
        return -1
    raw = request.headers["Last-Event-ID"].strip()
    # Segment ids are small; a number past any of them (and past SQLite's
    # 64-bit integers) is refused before the stream starts.
    if not raw.isdigit() or len(raw) > 9:
        raise InvalidRequest(
            "Last-Event-ID must be a segment id sent by this stream", param="Last-Event-ID"
        )
    return int(raw) - 1


async def open_sse(request: web.Request) -> web.StreamResponse:
    """Start a Server-Sent Events response."""
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx would otherwise hold events back
        }
    )
    await resp.prepare(request)
    return resp


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


@routes.get("/v1/jobs/{job_id}/events", allow_head=False)  # HEAD would follow the job
async def job_events(request: web.Request) -> web.StreamResponse:
    job_id = validate_job_id(request.match_info["job_id"])
    after = last_event_id(request)
    updates = follow(request.app[STORE], request.app[EVENTS], job_id, after=after)
    async with contextlib.aclosing(updates):
        # Take the first update before answering, so an unknown job is a plain 404.
        first = await anext(updates)
        resp = await open_sse(request)
        try:
            await resp.write(frame_for(first))
            async for chunk in sse_frames(updates):
                if _gone(request):
                    raise ConnectionResetError("client disconnected")
                if chunk:
                    await resp.write(chunk)
        except ConnectionResetError:
            log.debug("events.client_gone", job_id=job_id)
            return resp
        except NotFound:
            # Retention deleted the job mid-stream: nothing more will come.
            log.info("events.job_gone", job_id=job_id)
    with contextlib.suppress(ConnectionResetError):
        await resp.write_eof()
    return resp


__all__ = ["frame_for", "open_sse", "routes", "sse_frame", "sse_frames"]
