"""``GET /openapi.json`` and ``GET /docs`` (C6).

The schemas come from the pydantic models that validate requests and shape
responses (``api/schemas.py``, ``OpenAIForm``); the paths are the routes the
app serves, each documented by hand in ``DOCS`` (aiohttp routes carry no
types); a served route without an entry fails the build of the spec. The
format enum is ``formats.FORMATS``, the status enum ``wire.STATUSES``.
``tests/test_openapi.py`` checks real responses against the schemas, so
neither side can drift silently.

The transcript and event shapes below are produced by ``formats.render`` and
the event streams; the tests check those bodies against these models."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

from sona.api.middleware import OPEN_PATHS
from sona.api.openai_schemas import LanguageForm, LanguageOut, OpenAIForm
from sona.api.schemas import (
    ErrorBody,
    HealthOut,
    JobForm,
    JobList,
    JobOut,
    JobUrl,
    ModelDeletedOut,
    ModelListOut,
    ModelLoad,
    ModelOut,
    ModelsDeletedOut,
    ReadyOut,
    SeedJobOut,
    SeedStatusOut,
    WebhookList,
)
from sona.api.search_schemas import LANGUAGE_RE, MAX_LIMIT, SearchList
from sona.errors import NotFound
from sona.formats import CONTENT_TYPES, FORMATS
from sona.jobs import JOB_ID_RE, TranscribeOptions
from sona.wire import STATUSES

routes = web.RouteTableDef()

REF = "#/components/schemas/{model}"
STATIC = Path(__file__).resolve().parent.parent / "static"
# Served by name from this table only: nothing from the URL reaches a path (F7).
ASSETS = {"docs.js": "text/javascript", "docs.css": "text/css"}


class TranscriptionOut(BaseModel):
    """OpenAI's `json` response."""

    text: str


class SegmentOut(BaseModel):
    """A verbose_json segment; also the data of an SSE `segment` event."""

    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float | None
    avg_logprob: float | None
    compression_ratio: float | None
    no_speech_prob: float | None
    speaker: str | None = None


class WordOut(BaseModel):
    word: str
    start: float
    end: float


class VerboseTranscriptionOut(BaseModel):
    """OpenAI's `verbose_json` response; `words` only when asked for."""

    task: Literal["transcribe", "translate"]
    language: str | None
    # Sona's: the detector's probability, when the language was detected.
    language_probability: float | None = None
    duration: float
    text: str
    segments: list[SegmentOut] | None = None
    words: list[WordOut] | None = None


class FeedStateOut(BaseModel):
    """The data of a `state` event of `GET /v1/events`."""

    models: list[ModelOut]
    queue_size: int
    processing: int
    worker_running: bool


class FeedSnapshotOut(BaseModel):
    """The data of a `snapshot` event of `GET /v1/events`."""

    jobs: list[JobOut]
    state: FeedStateOut
    last_event_id: str | None


SCHEMA_MODELS: tuple[type[BaseModel], ...] = (
    JobForm, JobUrl, JobOut, JobList, ErrorBody, ModelLoad, OpenAIForm, HealthOut, ReadyOut,
    ModelOut, ModelListOut, ModelDeletedOut, ModelsDeletedOut, SeedJobOut, SeedStatusOut,
    TranscriptionOut, VerboseTranscriptionOut, FeedStateOut, FeedSnapshotOut, WebhookList,
    LanguageForm, LanguageOut, SearchList,
)  # fmt: skip
FORMS = {"JobForm", "OpenAIForm", "LanguageForm"}  # multipart: the schema gains the file part


def ref(name: str) -> dict[str, Any]:
    return {"$ref": REF.format(model=name)}


def schemas() -> dict[str, Any]:
    """Component schemas: every model in ``SCHEMA_MODELS`` and its ``$defs``."""
    out: dict[str, Any] = {}
    for model in SCHEMA_MODELS:
        mode: Literal["validation", "serialization"] = (
            "validation"
            if model in (JobForm, JobUrl, ModelLoad, OpenAIForm, LanguageForm)
            else "serialization"
        )
        schema = model.model_json_schema(ref_template=REF, mode=mode)
        out.update(schema.pop("$defs", {}))
        if model.__name__ in FORMS:
            schema["properties"] = {
                name: _form_field(prop) for name, prop in schema["properties"].items()
            }
            schema["properties"] = {
                "file": {"type": "string", "format": "binary", "description": "the audio"},
                **schema["properties"],
            }
            schema["required"] = ["file", *schema.get("required", [])]
        out[model.__name__] = schema
    return out


# How pydantic reads a boolean sent as text (forms carry only text).
BOOL_TEXT = ["true", "false", "1", "0", "yes", "no", "on", "off", "t", "f", "y", "n"]


def _form_field(prop: dict[str, Any]) -> dict[str, Any]:
    """A multipart field's real schema: text, never JSON null (``X | None``
    becomes ``X``); a boolean also in pydantic's text spellings; and an empty
    value, which means the field's default."""
    options = [o for o in prop.pop("anyOf", []) if o.get("type") != "null"]
    if len(options) == 1:
        prop.update(options[0])
    elif options:
        prop["anyOf"] = options
    if prop.get("default", 0) is None:
        del prop["default"]
    if prop.get("type") == "boolean":
        prop = {**prop, "type": ["boolean", "string"], "enum": [True, False, *BOOL_TEXT]}
    return {"anyOf": [prop, {"const": ""}], "description": "empty: the default"}


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


def _operation(method: str, path: str, op: Op) -> dict[str, Any]:
    params = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": PATH_PARAMS.get(name, {"type": "string", "minLength": 1}),
        }
        for name in _path_params(path)
    ]
    params += [
        {
            "name": name,
            "in": where,
            "required": name in op.required,
            "schema": schema,
            "description": doc,
        }
        for where, table in (("query", op.query), ("header", op.headers))
        for name, schema, doc in table
    ]
    responses: dict[str, Any] = {}
    for status, content in op.responses.items():
        responses[str(status)] = _response(status, content)
    errors = op.errors if path in OPEN_PATHS else (*op.errors, 401)
    for status in sorted(set(errors)):
        responses[str(status)] = _response(status, json_of("ErrorBody"))
    out: dict[str, Any] = {
        "tags": [op.tag],
        "summary": op.summary,
        "operationId": f"{method.lower()}{_camel(path)}",
        "responses": responses,
    }
    if op.description:
        out["description"] = op.description
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {"required": True, "content": op.body}
    if path in OPEN_PATHS:
        out["security"] = []
    return out


def _response(status: int, content: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"description": HTTPStatus(status).phrase}
    if content:
        out["content"] = copy.deepcopy(content)
    return out


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def _camel(path: str) -> str:
    words = path.replace("{", "by_").replace("}", "").replace(".", "_").replace("/", "_")
    return "".join(w.capitalize() for w in words.split("_") if w)


def served(router: web.UrlDispatcher) -> list[tuple[str, str]]:
    """(method, path) of every route the app serves, in the order of ``DOCS``.
    ``KeyError`` names a route that has no documentation."""
    routes = {
        (route.method, route.resource.canonical)
        for route in router.routes()
        if route.method != "HEAD" and route.resource is not None  # HEAD: aiohttp's own twin
    }
    missing = routes - DOCS.keys()
    if missing:
        raise KeyError(f"routes without an entry in api/openapi.py's DOCS: {sorted(missing)}")
    return [key for key in DOCS if key in routes]


def build_spec(router: web.UrlDispatcher) -> dict[str, Any]:
    """The OpenAPI 3.1 document for every route ``router`` serves."""
    paths: dict[str, dict[str, Any]] = {}
    routes = served(router)
    for method, path in routes:
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, DOCS[method, path])
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Sona",
            "version": _version(),
            "description": "Self-hosted transcription daemon: a durable job queue and "
            "an OpenAI-compatible speech-to-text API. Errors use OpenAI's shape.",
        },
        "tags": [{"name": t} for t in dict.fromkeys(DOCS[key].tag for key in routes)],
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        # The empty requirement: keys are optional, only needed when configured (F4).
        "security": [{}, {"bearer": []}],
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sona")
    except PackageNotFoundError:
        return "0"


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(build_spec(request.app.router))


# The page runs only our own script and style; the policy keeps it that way.
CSP = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'"


@routes.get("/docs")
async def docs(request: web.Request) -> web.FileResponse:
    return web.FileResponse(
        STATIC / "docs.html",
        headers={"Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": CSP},
    )


@routes.get("/docs/{asset}")
async def docs_asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["asset"]
    if name not in ASSETS:
        raise NotFound(f"no asset {name!r}", param="asset")
    return web.FileResponse(STATIC / name, headers={"Content-Type": ASSETS[name]})
