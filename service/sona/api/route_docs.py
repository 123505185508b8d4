"""The documentation of every route, by (method, path): what ``/openapi.json``
says about each operation beyond its schemas — summary, description, the
statuses it answers and their media types, query and header parameters.
aiohttp routes carry no types, so this table is written by hand; a served
route without an entry here fails the build of the spec (``api/openapi.py``).
The format enum is ``formats.FORMATS``, the status enum ``wire.STATUSES``, a
download's caption bounds ``TranscribeOptions``'."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sona.api.search_schemas import LANGUAGE_RE, MAX_LIMIT
from sona.formats import CONTENT_TYPES, FORMATS
from sona.jobs import JOB_ID_RE, TranscribeOptions
from sona.wire import STATUSES

REF = "#/components/schemas/{model}"


def ref(name: str) -> dict[str, Any]:
    return {"$ref": REF.format(model=name)}


# Content helpers for the table: media type → schema.
def json_of(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": ref(name)}}


TEXT = {"text/plain": {"schema": {"type": "string"}}}
# One Server-Sent Event, as a client's parser sees it (``data`` is JSON text).
SSE = {
    "text/event-stream": {
        "schema": {
            "type": "object",
            "properties": {
                "event": {"type": "string"},
                "data": {"type": "string"},
                "id": {"type": "string"},
                "retry": {"type": "integer"},
            },
        }
    }
}
TRANSCRIPT_TYPES = {
    media: {"schema": {} if media.endswith("json") else {"type": "string"}}
    for media in dict.fromkeys(t.split(";")[0] for t in CONTENT_TYPES.values())
}
AUDIO = {"audio/*": {"schema": {"type": "string", "format": "binary"}}}


@dataclass(frozen=True)
class Op:
    """One operation: ``responses`` maps a status to its content (media type →
    media object); ``errors`` lists the statuses answered with an ``ErrorBody``;
    ``query`` and ``headers`` are (name, schema, description)."""

    tag: str
    summary: str
    responses: dict[int, dict[str, Any]]
    errors: tuple[int, ...] = ()
    body: dict[str, Any] | None = None
    query: tuple[tuple[str, dict[str, Any], str], ...] = ()
    headers: tuple[tuple[str, dict[str, Any], str], ...] = ()
    description: str = ""
    required: tuple[str, ...] = ()  # query parameters that must be sent


def multipart(name: str) -> dict[str, Any]:
    # metadata is a JSON object sent as one text part.
    enc = {"metadata": {"contentType": "application/json"}} if name == "JobForm" else {}
    return {"multipart/form-data": {"schema": ref(name), "encoding": enc}}


OPENAI_RESPONSES: dict[int, dict[str, Any]] = {
    200: {
        "application/json": {
            # anyOf: a verbose body is also a valid {text} body.
            "schema": {"anyOf": [ref("TranscriptionOut"), ref("VerboseTranscriptionOut")]}
        },
        **TEXT,
        "application/x-subrip": {"schema": {"type": "string"}},
        "text/vtt": {"schema": {"type": "string"}},
        **SSE,
        "application/x-ndjson": {"schema": {"type": "string"}},
    }
}
# Descriptions are shown on /docs: plain prose, `code` in single backticks, no
# SPEC ids (OpenAI C1, job events A5, the feed I2).
OPENAI_DOC = (
    "OpenAI-compatible. response_format json → {text}; verbose_json → segments "
    "(and words with timestamp_granularities[]=word); text, srt, vtt → plain text. "
    "stream=true answers text/event-stream (transcript.text.delta / .segment / .done, "
    "then [DONE]), or NDJSON with Accept: application/x-ndjson. Extras beyond OpenAI: "
    "beam_size, vad_filter, vad_threshold, min_silence_duration_ms, speech_pad_ms, "
    "hotwords, diarize, and for srt and vtt max_line_width, max_line_count, "
    "max_cue_duration (srt and vtt also turn word timestamps on)."
)
LANGUAGE_DOC = (
    "Detect the language of an upload without transcribing it: the first chunk of "
    "speech, cut as a job would cut it, is given to the model (`model`, else the "
    "default). An English-only model answers `en` with probability 1.0; audio without "
    "speech has no language (`language` null)."
)
EVENTS_DOC = (
    "Server-Sent Events: `status` (the job; on connect and on each change), "
    "`progress` ({progress, processed_seconds, duration, segments_done}), `segment` "
    "(a verbose_json segment, id = index + 1), then `completed` | `failed` | "
    "`cancelled` with the job, and the stream ends. Send `Last-Event-ID: N` to resume "
    "after segment N; `: ping` comments keep idle connections open."
)
FEED_DOC = (
    "Server-Sent Events for the whole queue (the dashboard's feed): `snapshot` "
    "(FeedSnapshotOut: the newest 50 jobs and every queued or processing one, and the "
    "state) first on every connection, then `job` (a job object, when one in view is "
    "new or changed), `removed` ({id}, deleted by retention) and `state` (FeedStateOut, "
    "when it changes). Frames carry ids; a client reconnecting with `Last-Event-ID` gets "
    "a fresh snapshot (the id echoed as last_event_id), so it misses nothing."
)
# Path parameters' real constraints (a job id is [A-Za-z0-9_-]{1,64}).
JOB_ID = {"type": "string", "pattern": JOB_ID_RE.pattern}
PATH_PARAMS: dict[str, dict[str, Any]] = {"job_id": JOB_ID}


FMT = {"type": "string", "enum": list(FORMATS)}


def _bounds(name: str) -> dict[str, Any]:
    """A TranscribeOptions field's schema as a query parameter's (never null)."""
    prop = TranscribeOptions.model_json_schema()["properties"][name]
    schema: dict[str, Any] = next(o for o in prop["anyOf"] if o.get("type") != "null")
    return schema


# The caption overrides of a download, with TranscribeOptions' bounds.
CAPTION_QUERY = tuple(
    (name, _bounds(name), doc)
    for name, doc in (
        ("max_line_width", "srt/vtt: characters per line (default 42)"),
        ("max_line_count", "srt/vtt: lines per cue (default 2)"),
        ("max_cue_duration", "srt/vtt: seconds a cue stays on screen at most (default 7)"),
    )
)
STATUS_Q = {"type": "string", "enum": list(STATUSES)}
REALTIME_DOC = (
    "A WebSocket speaking OpenAI's Realtime protocol for transcription sessions, as the "
    "openai SDK's client.realtime.connect does with websocket_base_url pointed here: "
    "session.update, input_audio_buffer.append, commit and clear in; speech_started and "
    "speech_stopped (server VAD), committed, the transcription's delta and completed, and "
    "error out. Every session is recorded as a job that ends completed. A browser, which "
    "cannot set headers on a WebSocket, passes the API key as the subprotocol "
    "`openai-insecure-api-key.KEY` beside `realtime`. See docs/api.md, Live sessions."
)
SEARCH_DOC = (
    "Segments of completed jobs that hold every word of `q`, best first, with their "
    'times and the matched words as `marks` (offsets into `text`). `"a phrase"` '
    "matches the words in order, `word*` any word starting so; every other character "
    "is plain text. An unbalanced quote is 400 `invalid_query`. Filter by metadata "
    "with `metadata.KEY=VALUE` (string values; several AND). docs/api.md has the rest."
)

# The documentation of each route, by (method, path), in the order /docs shows
# them. The routes themselves are the app's (``api/routes.py``): the spec lists
# what the router serves, and a served route without an entry here fails it.
DOCS: dict[tuple[str, str], Op] = {
    ("GET", "/health"): Op("operations", "Liveness: 503 once the worker has stopped",
       {200: json_of("HealthOut"), 503: json_of("HealthOut")}),
    ("GET", "/ready"): Op("operations", "Readiness: a model loaded and the worker running",
       {200: json_of("ReadyOut"), 503: json_of("ReadyOut")}),
    ("GET", "/metrics"): Op("operations", "Prometheus metrics", {200: TEXT},
       description="Prometheus text format; the metrics are listed in docs/operations.md."),
    ("POST", "/v1/jobs"): Op("jobs", "Submit a job", {202: json_of("JobOut"),
       200: json_of("JobOut")}, (400, 404, 408, 409, 413, 415, 422, 503, 507),
       body={**multipart("JobForm"), "application/json": {"schema": ref("JobUrl")}},
       headers=(("Idempotency-Key", {"type": "string", "minLength": 1, "maxLength": 255},
                 "the same key with the same file returns the existing job"),),
       description="Multipart upload, or JSON {url, ...} for Sona to fetch the audio. "
       "200 answers an idempotent repeat."),
    ("GET", "/v1/jobs"): Op("jobs", "List jobs, newest first", {200: json_of("JobList")}, (400,),
       query=(("status", STATUS_Q, "only jobs in this status"),
              ("limit", {"type": "integer", "minimum": 1, "maximum": 200}, "page size"),
              ("before", JOB_ID, "cursor: next_before of the previous page"))),
    ("GET", "/v1/search"): Op("jobs", "Search every transcript", {200: json_of("SearchList")},
       (400,), query=(("q", {"type": "string", "minLength": 1, "maxLength": 500},
                       'words (all must match), "a phrase", prefix*'),
              ("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
               "page size (default 20)"),
              ("cursor", {"type": "string"}, "next_cursor of the previous page"),
              ("job_id", JOB_ID, "only this job"),
              ("language", {"type": "string", "pattern": LANGUAGE_RE.pattern},
               "only jobs in this language"),
              ("created_after", {"type": "string"},
               "only jobs created at or after (ISO 8601 or epoch seconds)"),
              ("created_before", {"type": "string"},
               "only jobs created before (ISO 8601 or epoch seconds)")),
       description=SEARCH_DOC, required=("q",)),
    ("GET", "/v1/jobs/{job_id}"): Op("jobs", "Job status", {200: json_of("JobOut")}, (400, 404)),
    ("DELETE", "/v1/jobs/{job_id}"): Op("jobs", "Cancel a job",
       {200: json_of("JobOut"), 202: json_of("JobOut")}, (400, 404, 409),
       description="202 while a processing job has not stopped yet."),
    ("GET", "/v1/jobs/{job_id}/transcript"): Op("jobs", "Download the transcript",
       {200: TRANSCRIPT_TYPES}, (400, 404, 409),
       query=(("format", FMT, "output format (default text)"), *CAPTION_QUERY),
       description="srt and vtt cues follow the job's caption options; the query "
       "overrides them for this download."),
    ("GET", "/v1/jobs/{job_id}/webhooks"): Op("jobs", "The job's webhook deliveries",
       {200: json_of("WebhookList")}, (400, 404),
       description="Each delivery to the job's callback_url: state (pending | "
       "delivered | dead | disabled), every attempt with its status code and error, "
       "the next attempt while pending. Empty for a job without callback_url."),
    ("GET", "/v1/jobs/{job_id}/events"): Op("jobs", "Follow a job (Server-Sent Events)",
       {200: SSE}, (400, 404), description=EVENTS_DOC,
       headers=(("Last-Event-ID", {"type": "integer", "minimum": 0, "maximum": 999_999_999},
                 "resume after this segment id"),)),
    ("GET", "/v1/events"): Op("jobs", "Follow every job (Server-Sent Events)", {200: SSE},
       description=FEED_DOC, headers=(("Last-Event-ID", {"type": "string"},
                                       "any id this stream sent: answered with a snapshot"),)),
    ("GET", "/v1/jobs/{job_id}/audio"): Op("jobs", "The retained upload, for playback",
       {200: AUDIO, 206: AUDIO, 416: AUDIO}, (400, 404),
       headers=(("Range", {"type": "string", "pattern": r"^bytes=[0-9]*-[0-9]*$"},
                 "bytes=START-END: answered 206 (416 past the end)"),),
       description="The file as uploaded, while retention keeps it (404 after)."),
    ("POST", "/v1/audio/transcriptions"): Op("openai", "Transcribe (OpenAI-compatible)",
       OPENAI_RESPONSES, (400, 404, 408, 409, 413, 415, 422, 429, 500, 503, 507),
       body=multipart("OpenAIForm"), description=OPENAI_DOC),
    ("POST", "/v1/audio/translations"): Op("openai", "Translate to English (OpenAI-compatible)",
       OPENAI_RESPONSES, (400, 404, 408, 409, 413, 415, 422, 429, 500, 503, 507),
       body=multipart("OpenAIForm"), description=OPENAI_DOC),
    ("GET", "/v1/realtime"): Op("openai", "Live transcription session (WebSocket)",
       {101: {}}, (400, 401, 403, 409, 426), description=REALTIME_DOC,
       query=(("session_id", {"type": "string"}, "resume this session after a dropped "
               "connection, within live_resume_grace_s"),
              ("last_event_id", {"type": "string"}, "with session_id: the last event "
               "the client read; what the server wrote after it is sent again"),
              ("callback_url", {"type": "string"}, "the session's job's "
               "webhooks (its end; its transcript replaced), checked as a job's"),
              ("refine_model", {"type": "string"}, "at the session's end, its whole "
               "recording is transcribed again with this model, and that transcript "
               "replaces the session's (webhook job.transcript_replaced)"))),
    ("POST", "/v1/audio/language"): Op("openai", "Detect the language of an upload",
       {200: json_of("LanguageOut")}, (400, 404, 408, 409, 413, 415, 422, 500, 503, 507),
       body=multipart("LanguageForm"), description=LANGUAGE_DOC),
    ("GET", "/v1/models"): Op("models", "Loaded models", {200: json_of("ModelListOut")}),
    ("POST", "/v1/models/load"): Op("models", "Load a model", {200: json_of("ModelOut")},
       (400, 404, 503), body=json_of("ModelLoad")),
    ("GET", "/v1/models/{model_id}"): Op("models", "A loaded model or an OpenAI alias",
       {200: json_of("ModelOut")}, (404,)),
    ("DELETE", "/v1/models/{model_id}"): Op("models", "Unload a model",
       {200: json_of("ModelDeletedOut")}),
    ("DELETE", "/v1/models"): Op("models", "Unload all models",
       {200: json_of("ModelsDeletedOut")}),
    ("POST", "/transcribe"): Op("seed", "Submit (seed-compatible)", {200: json_of("SeedJobOut")},
       (400, 404, 408, 409, 413, 415, 422, 503, 507), body=multipart("JobForm")),
    ("GET", "/status/{job_id}"): Op("seed", "Status (seed-compatible)",
       {200: json_of("SeedStatusOut")}, (400, 404)),
    ("GET", "/download/{job_id}"): Op("seed", "Transcript text (seed-compatible)",
       {200: TEXT}, (400, 404), description="404 until the transcript is ready."),
    ("GET", "/openapi.json"): Op("meta", "This document", {200: {"application/json": {}}}),
    ("GET", "/docs"): Op("meta", "Interactive API page", {200: {"text/html": {}}}),
    ("GET", "/docs/{asset}"): Op("meta", "Assets of the API page",
       {200: {"text/javascript": {}, "text/css": {}}}, (404,)),
    ("GET", "/"): Op("meta", "The dashboard page (asks for an API key when keys are on)",
       {200: {"text/html": {}}}),
    ("GET", "/dashboard/{asset}"): Op("meta", "Assets of the dashboard page",
       {200: {"text/javascript": {}, "text/css": {}}}, (404,)),
}  # fmt: skip
