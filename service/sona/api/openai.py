"""OpenAI-compatible speech-to-text (C1–C5): /v1/audio/transcriptions and
/v1/audio/translations, as the official SDK calls them.

A request here is a job like any other, queued at top priority (C4): one
scheduler, one worker. The handler follows the job's events and answers in the
requested format, or streams them (SSE for the SDK, NDJSON for sidecars). A
client that goes away cancels its job, which frees the worker within one
decoding window (C3)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any, Literal

from aiohttp import web

from sona import queue
from sona.api.errors import error_body, status_for
from sona.api.forms import read_form
from sona.api.openai_schemas import OpenAIForm
from sona.api.schemas import parse
from sona.api.sse import gone, progress_out, segment_out
from sona.errors import InvalidRequest, SonaError, from_code
from sona.events import TERMINAL, JobUpdate
from sona.formats import render
from sona.intake import SYNC_PRIORITY, Submission
from sona.jobs import Job, Status
from sona.keys import RUNTIME, SETTINGS, STORE, UPLOADS

routes = web.RouteTableDef()

# OpenAI fields Sona does not implement: refused rather than silently ignored.
UNSUPPORTED = {
    "include[]",
    "include",
    "chunking_strategy",
    "known_speaker_names[]",
    "known_speaker_references[]",
}
POLL_S = 0.5  # how soon a vanished client is noticed while nothing else happens


@routes.post("/v1/audio/transcriptions")
async def transcriptions(request: web.Request) -> web.StreamResponse:
    return await _handle(request, "transcribe")


@routes.post("/v1/audio/translations")
async def translations(request: web.Request) -> web.StreamResponse:
    return await _handle(request, "translate")


async def _handle(
    request: web.Request, task: Literal["transcribe", "translate"]
) -> web.StreamResponse:
    app = request.app
    form = await read_form(request, app[UPLOADS], app[SETTINGS])
    with form.required_upload() as upload:
        if bad := UNSUPPORTED & form.fields.keys():
            name = sorted(bad)[0]
            raise InvalidRequest(f"{name} is not supported by this server", param=name)
        fields: dict[str, Any] = form.first()
        if grans := [g for g in form.fields.get("timestamp_granularities[]", []) if g]:
            fields["timestamp_granularities[]"] = grans
        req = parse(OpenAIForm, fields)
        sub = Submission(
            options=req.options(task), priority=SYNC_PRIORITY, dedupe=app[SETTINGS].dedupe
        )
    rt = app[RUNTIME]
    job, _ = await queue.admit(rt, upload, sub)
    updates = queue.updates(rt, job.id, poll_s=POLL_S)
    claimed = queue.claimed(updates, app[SETTINGS].sync_wait_s, lambda: gone(request))
    try:
        async with aclosing(updates), aclosing(claimed):
            if req.stream:
                return await _stream(request, claimed, req)
            async for update in claimed:
                if update.type in TERMINAL:
                    return await _respond(request, update.job, req)
            raise AssertionError("follow() ends with a terminal update")
    finally:
        await asyncio.shield(queue.abandon(rt, job.id))


def _job_error(job: Job) -> SonaError:
    if job.status == Status.CANCELLED:
        return from_code("cancelled", "the transcription was cancelled")
    return from_code(job.error_code or "engine_error", job.error_message or "transcription failed")


async def _verbose(request: web.Request, job: Job) -> dict[str, Any]:
    body, _ = render(job, await request.app[STORE].segments(job.id), "verbose_json")
    data: dict[str, Any] = json.loads(body)
    return data


async def _respond(request: web.Request, job: Job, req: OpenAIForm) -> web.Response:
    if job.status != Status.COMPLETED:
        raise _job_error(job)
    if req.response_format == "verbose_json" and "segment" not in req.timestamp_granularities:
        data = await _verbose(request, job)
        data.pop("segments", None)  # OpenAI sends only what was asked for
        return web.json_response(data)
    body, content_type = render(job, await request.app[STORE].segments(job.id), req.response_format)
    return web.Response(text=body, content_type=content_type.split(";")[0], charset="utf-8")


async def _stream(
    request: web.Request, claimed: AsyncIterator[JobUpdate], req: OpenAIForm
) -> web.StreamResponse:
    first = await anext(claimed)  # Busy is raised here, while a 429 can still be sent
    ndjson = "application/x-ndjson" in request.headers.get("Accept", "")
    resp = web.StreamResponse(
        headers={
            "Content-Type": "application/x-ndjson" if ndjson else "text/event-stream",
            "Cache-Control": "no-cache",
        }
    )
    await resp.prepare(request)
    send = _ndjson_sender(resp) if ndjson else _sse_sender(resp)
    try:
        update: JobUpdate | None = first
        while update is not None:
            for kind, data in await _stream_items(request, update):
                await send(kind, data)
            update = await anext(claimed, None)
    except ConnectionResetError:
        return resp  # the finally in _handle cancels the job
    with contextlib.suppress(ConnectionResetError):
        await resp.write_eof()
    return resp


async def _stream_items(
    request: web.Request, update: JobUpdate
) -> list[tuple[str, dict[str, Any]]]:
    """What one update means on the wire: progress, segment, then result or error."""
    job = update.job
    if update.segment is not None:
        return [("segment", segment_out(job, update.segment))]
    if update.type in ("progress", "status"):
        return [("progress", progress_out(job))]
    if update.type == "completed":
        return [("result", await _verbose(request, job))]
    err = _job_error(job)
    return [("error", error_body(err.message, status_for(err), err.code, err.param))]


def _sse_sender(resp: web.StreamResponse) -> Any:
    """The SDK's transcription stream: text deltas, segments, done, [DONE]."""

    async def send_data(obj: dict[str, Any] | str) -> None:
        payload = obj if isinstance(obj, str) else json.dumps(obj)
        await resp.write(f"data: {payload}\n\n".encode())

    async def send(kind: str, data: dict[str, Any]) -> None:
        if kind == "segment":
            await send_data({"type": "transcript.text.delta", "delta": data["text"]})
            # The SDK's event requires a speaker; without diarization it is unknown.
            await send_data(
                {
                    "type": "transcript.text.segment",
                    "id": str(data["id"]),
                    "start": data["start"],
                    "end": data["end"],
                    "text": data["text"],
                    "speaker": data.get("speaker") or "unknown",
                }
            )
        elif kind == "result":
            await send_data({"type": "transcript.text.done", "text": data["text"]})
            await send_data("[DONE]")
        elif kind == "error":
            await send_data({"type": "error", **data})

    return send


def _ndjson_sender(resp: web.StreamResponse) -> Any:
    """The Sona sidecar stream: one JSON object per line."""

    async def send(kind: str, data: dict[str, Any]) -> None:
        await resp.write((json.dumps({"type": kind, **data}) + "\n").encode())

    return send
