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
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from service.api.errors import error_body, status_for
from service.api.forms import read_form
from service.api.schemas import parse
from service.errors import Busy, InvalidRequest, SonaError, from_code
from service.events import TERMINAL, JobEvent
from service.formats import render
from service.intake import SYNC_PRIORITY, Submission
from service.jobs import Job, Status, TranscribeOptions
from service.keys import EVENTS, INTAKE, SETTINGS, STORE, UPLOADS, WORKER

routes = web.RouteTableDef()

# OpenAI fields Sona does not implement: refused rather than silently ignored.
UNSUPPORTED = {
    "include[]",
    "include",
    "chunking_strategy",
    "known_speaker_names[]",
    "known_speaker_references[]",
}
POLL_S = 0.5


class OpenAIForm(BaseModel):
    """The fields of an OpenAI transcription request, plus faster-whisper extras.
    Unknown fields are ignored, as OpenAI's own API does."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    language: str | None = None
    prompt: str | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)
    response_format: Literal["json", "text", "srt", "verbose_json", "vtt"] = "json"
    timestamp_granularities: list[Literal["word", "segment"]] = Field(
        default=["segment"], alias="timestamp_granularities[]"
    )
    stream: bool = False
    beam_size: int | None = Field(default=None, ge=1, le=10)
    vad_filter: bool | None = None
    hotwords: str | None = None
    diarize: Literal["none", "channels"] = "none"

    def options(self, task: Literal["transcribe", "translate"]) -> TranscribeOptions:
        return TranscribeOptions(
            model=self.model,
            language=self.language,
            prompt=self.prompt,
            temperature=self.temperature,
            task=task,
            beam_size=self.beam_size,
            vad_filter=self.vad_filter,
            hotwords=self.hotwords,
            diarize=self.diarize,
            word_timestamps="word" in self.timestamp_granularities,
        )


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
    try:
        if form.upload is None:
            raise InvalidRequest("the 'file' part is required", param="file")
        if bad := UNSUPPORTED & form.fields.keys():
            name = sorted(bad)[0]
            raise InvalidRequest(f"{name} is not supported by this server", param=name)
        fields: dict[str, Any] = form.first()
        if grans := form.fields.get("timestamp_granularities[]"):
            fields["timestamp_granularities[]"] = grans
        req = parse(OpenAIForm, fields)
    except BaseException:
        form.discard()
        raise
    sub = Submission(options=req.options(task), priority=SYNC_PRIORITY)
    job, _ = await app[INTAKE].admit(form.upload, sub)
    # Subscribe before the worker can start, so no event is missed.
    with app[EVENTS].subscribe(job.id) as inbox:
        app[WORKER].wake()
        try:
            await _await_claim(request, job, inbox)
            if req.stream:
                return await _stream(request, job, inbox, req)
            return await _respond(request, await _await_end(request, job, inbox), req)
        finally:
            await asyncio.shield(_abandon(request, job.id))


async def _abandon(request: web.Request, job_id: str) -> None:
    """Cancel the job unless it finished: the client went away or we failed."""
    job = await request.app[STORE].get(job_id)
    if not job.status.finished:
        await request.app[STORE].cancel(job_id)
        request.app[WORKER].request_cancel(job_id)


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _next(request: web.Request, inbox: asyncio.Queue[JobEvent]) -> JobEvent | None:
    """The next event, or None after a quiet poll interval. Raises
    ConnectionResetError once the client has gone."""
    if _gone(request):
        raise ConnectionResetError("client disconnected")
    try:
        return await asyncio.wait_for(inbox.get(), POLL_S)
    except TimeoutError:
        return None


async def _await_claim(request: web.Request, job: Job, inbox: asyncio.Queue[JobEvent]) -> None:
    """Wait for the worker to take the job; 429 if that takes longer than the
    configured bound (C4). Events that arrive meanwhile are put back."""
    deadline = asyncio.get_running_loop().time() + request.app[SETTINGS].sync_wait_s
    seen: list[JobEvent] = []
    try:
        while asyncio.get_running_loop().time() < deadline:
            if (event := await _next(request, inbox)) is not None:
                seen.append(event)
                return
            if (await request.app[STORE].get(job.id)).status != Status.QUEUED:
                return
        raise Busy("the server is busy; try again shortly", retry_after=5)
    finally:
        for event in seen:
            inbox.put_nowait(event)


async def _await_end(request: web.Request, job: Job, inbox: asyncio.Queue[JobEvent]) -> Job:
    store = request.app[STORE]
    while True:
        event = await _next(request, inbox)
        if event is None or event.type in TERMINAL:
            current = await store.get(job.id)
            if current.status.finished:
                return current


def _job_error(job: Job) -> SonaError:
    if job.status == Status.CANCELLED:
        return from_code("cancelled", "the transcription was cancelled")
    return from_code(job.error_code or "engine_error", job.error_message or "transcription failed")


async def _respond(request: web.Request, job: Job, req: OpenAIForm) -> web.Response:
    if job.status != Status.COMPLETED:
        raise _job_error(job)
    segments = await request.app[STORE].segments(job.id)
    body, content_type = render(job, segments, req.response_format)
    if req.response_format == "verbose_json" and "segment" not in req.timestamp_granularities:
        data = json.loads(body)
        data.pop("segments", None)  # OpenAI sends only what was asked for
        body = json.dumps(data)
    return web.Response(text=body, content_type=content_type.split(";")[0], charset="utf-8")


async def _stream(
    request: web.Request, job: Job, inbox: asyncio.Queue[JobEvent], req: OpenAIForm
) -> web.StreamResponse:
    ndjson = "application/x-ndjson" in request.headers.get("Accept", "")
    resp = web.StreamResponse(
        headers={
            "Content-Type": "application/x-ndjson" if ndjson else "text/event-stream",
            "Cache-Control": "no-cache",
        }
    )
    await resp.prepare(request)
    write = _ndjson_writer(resp) if ndjson else _sse_writer(resp)
    try:
        async for kind, data in _stream_events(request, job, inbox, req):
            await write(kind, data)
    except ConnectionResetError:
        return resp  # the finally in _handle cancels the job
    with contextlib.suppress(ConnectionResetError):
        await resp.write_eof()
    return resp


async def _stream_events(
    request: web.Request, job: Job, inbox: asyncio.Queue[JobEvent], req: OpenAIForm
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(kind, data): progress, segment, then result or error."""
    store = request.app[STORE]
    while True:
        event = await _next(request, inbox)
        if event is not None and event.type == "segment":
            yield "segment", event.data
        elif event is not None and event.type == "progress":
            yield "progress", event.data
        elif event is None or event.type in TERMINAL:
            final = await store.get(job.id)
            if not final.status.finished:
                continue
            if final.status != Status.COMPLETED:
                err = _job_error(final)
                yield "error", error_body(err.message, status_for(err), err.code, err.param)
                return
            body, _ = render(final, await store.segments(job.id), "verbose_json")
            yield "result", json.loads(body)
            return


def _sse_writer(resp: web.StreamResponse) -> Any:
    """The SDK's transcription stream: text deltas, segments, done, [DONE]."""

    async def send(obj: dict[str, Any] | str) -> None:
        payload = obj if isinstance(obj, str) else json.dumps(obj)
        await resp.write(f"data: {payload}\n\n".encode())

    async def write(kind: str, data: dict[str, Any]) -> None:
        if kind == "segment":
            await send({"type": "transcript.text.delta", "delta": data["text"]})
            # The SDK's event requires a speaker; without diarization it is unknown.
            await send(
                {
                    "type": "transcript.text.segment",
                    "id": str(data["index"]),
                    "start": data["start"],
                    "end": data["end"],
                    "text": data["text"],
                    "speaker": data.get("speaker") or "unknown",
                }
            )
        elif kind == "result":
            await send({"type": "transcript.text.done", "text": data["text"]})
            await send("[DONE]")
        elif kind == "error":
            await send({"type": "error", **data})

    return write


def _ndjson_writer(resp: web.StreamResponse) -> Any:
    """The Sona sidecar stream: one JSON object per line."""

    async def write(kind: str, data: dict[str, Any]) -> None:
        await resp.write((json.dumps({"type": kind, **data}) + "\n").encode())

    return write
