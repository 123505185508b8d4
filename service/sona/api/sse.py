"""What the streaming routes share: the SSE framing of a job's updates (A5), the
payloads of its segments and progress (also the OpenAI and NDJSON streams'), the
heartbeat, and whether the client is still there. No routes here, so the handler
modules (``job_events``, ``feed``, ``openai``) need not import one another."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from sona.api.schemas import job_out
from sona.events import JobUpdate
from sona.formats import render
from sona.jobs import Job, Segment

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


def gone(request: web.Request) -> bool:
    """Whether the client of a streaming response has gone away."""
    transport = request.transport
    return transport is None or transport.is_closing()
