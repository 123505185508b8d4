"""Server-Sent Events for one job (A5): ``GET /v1/jobs/{id}/events``.

The store is the source of truth. ``follow`` subscribes to the in-process
``EventHub`` first, then reads the job and its segments from the store, and
reads again whenever the hub wakes it or a poll interval passes (a worker in
another process publishes nothing here). So a client that connects late, or
reconnects with ``Last-Event-ID``, misses nothing, and live events only make it
prompt. ``follow`` knows nothing of HTTP; the frames are ``api/sse.py``'s, which the
OpenAI stream and the all-jobs feed share.

Wire format, one SSE event per update:

* ``status``   the job object (A2); on connect and on every status change
* ``progress`` ``{progress, processed_seconds, duration, segments_done}``
* ``segment``  the segment as in verbose_json (plus ``speaker``, ``words`` when
  present), with ``id: <index + 1>`` so ``Last-Event-ID: N`` resumes after it
* ``completed`` | ``failed`` | ``cancelled``  the job object; the stream ends

and a ``: ping`` comment after ``HEARTBEAT_S`` of silence, so proxies keep the
connection open."""

from __future__ import annotations

import contextlib

import structlog
from aiohttp import web

from sona import queue
from sona.api.sse import frame_for, gone, open_sse, sse_frames
from sona.errors import InvalidRequest, NotFound
from sona.jobs import validate_job_id
from sona.keys import RUNTIME

log = structlog.get_logger("sona.api")
routes = web.RouteTableDef()


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


@routes.get("/v1/jobs/{job_id}/events", allow_head=False)  # HEAD would follow the job
async def job_events(request: web.Request) -> web.StreamResponse:
    job_id = validate_job_id(request.match_info["job_id"])
    after = last_event_id(request)
    updates = queue.updates(request.app[RUNTIME], job_id, after=after)
    async with contextlib.aclosing(updates):
        # Take the first update before answering, so an unknown job is a plain 404.
        first = await anext(updates)
        resp = await open_sse(request)
        try:
            await resp.write(frame_for(first))
            async for chunk in sse_frames(updates):
                if gone(request):
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


__all__ = ["last_event_id", "routes"]
