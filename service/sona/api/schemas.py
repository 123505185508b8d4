"""Request and response shapes. The pydantic models here both validate input
and feed /openapi.json."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sona.api.errors import public_message
from sona.api.json_input import MAX_JSON_DEPTH, depth_exceeds, loads
from sona.captions import OPTION_NAMES as CAPTION_OPTIONS
from sona.captions import CaptionStyle, style_of
from sona.engine.registry import ModelEntry
from sona.errors import InvalidRequest, SonaError
from sona.jobs import JOB_ID_RE, Job, Status, TranscribeOptions
from sona.standing import Standing
from sona.store import Delivery, DeliveryState
from sona.worker_config import WorkerState

M = TypeVar("M", bound=BaseModel)
# Names of multipart fields: what form encoders send (timestamp_granularities[]).
FIELD_NAME_PATTERN = r"^[A-Za-z0-9_.\[\]-]{1,64}$"
ISO_MAX_TS = 253_402_300_799  # 9999-12-31T23:59:59Z, the last time datetime can show


def iso(ts: float | None) -> str | None:
    if ts is None or not math.isfinite(ts) or abs(ts) > ISO_MAX_TS:
        # Unrepresentable (a delivery row from before Retry-After was capped): no time.
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


class JobForm(TranscribeOptions):
    """Form fields of POST /v1/jobs besides `file`."""  # SPEC A1

    model_config = ConfigDict(extra="forbid")

    job_id: str | None = Field(default=None, pattern=JOB_ID_RE.pattern)
    priority: int = Field(default=0, ge=-1000, le=1000)
    metadata: dict[str, Any] | None = None
    callback_url: str | None = Field(
        default=None,
        description="POSTed a signed JSON event when the job completes, fails or is "
        "cancelled (docs/webhooks.md); refused with 422 invalid_callback_url when its "
        "address is not allowed",
    )
    # A11: answer from a completed job with the same file and options; None: the
    # server's `dedupe` setting decides.
    dedupe: bool | None = None

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                v = loads(v)
            except SonaError as exc:
                raise ValueError(f"metadata must be a JSON object: {exc.message}") from None
        if v is not None and not isinstance(v, dict):
            raise ValueError("metadata must be a JSON object")
        if v is not None and depth_exceeds(v, MAX_JSON_DEPTH):  # a JSON body's metadata
            raise ValueError(f"metadata nests deeper than {MAX_JSON_DEPTH} levels")
        return v

    def options(self) -> TranscribeOptions:
        options = TranscribeOptions.model_validate(
            self.model_dump(include=set(TranscribeOptions.model_fields))
        )
        # Asking for a caption layout asks for captions, and cues are cut well
        # only at word times (docs/api.md).
        if any(getattr(options, n) is not None for n in CAPTION_OPTIONS):
            options = options.model_copy(update={"word_timestamps": True})
        return options


class JobUrl(JobForm):
    """JSON body of POST /v1/jobs when Sona should fetch the audio itself."""  # SPEC A1

    url: str = Field(pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#\s]+", max_length=4096)


class ModelLoad(BaseModel):
    """One of `model` (a name) or `path` (a CTranslate2 directory)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": [name], "properties": {name: {"type": "string"}}}
                for name in ("model", "path")
            ]
        },
    )
    model: str | None = Field(default=None, min_length=1, max_length=1024)
    path: str | None = Field(default=None, min_length=1, max_length=4096)


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str
    param: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class HealthOut(BaseModel):
    status: Literal["ok", "unhealthy"]
    model_loaded: bool
    queue_size: int | None  # None when the store cannot be read
    worker: WorkerState | None  # None on an API node: its workers run elsewhere


class EngineOut(BaseModel):
    pid: int | None  # None until the engine process first starts (on first use)
    restarts: int
    # Seconds a ping has gone unanswered, once past engine_ping_timeout_s (a
    # stopped or wedged engine process); null while it answers.
    silent_s: float | None = None


class BatchStatsOut(BaseModel):
    steps: int
    chunks: int
    most_jobs_in_a_step: int
    last_step_s: float
    busy_s: float


class ReadyOut(BaseModel):
    status: Literal["ready", "not_ready"]
    role: Literal["api", "api+worker"]
    worker_running: bool
    reason: str | None = None  # why not ready
    models: list[str] = []
    worker: WorkerState | None = None
    engine: EngineOut | None = None
    jobs_in_flight: int = 0
    batches: BatchStatsOut | None = None


class ModelOut(BaseModel):
    """A loaded model, or an OpenAI alias (`whisper-1`) naming the model it runs
    on (`alias_for`); OpenAI's model object plus Sona's fields."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "sona"
    path: str | None = None
    load_seconds: float | None = None
    in_use: bool = False
    loaded: bool = True
    alias_for: str | None = None


def model_out(entry: ModelEntry) -> ModelOut:
    return ModelOut(
        id=entry.id,
        created=int(entry.loaded_at),
        path=str(entry.path),
        load_seconds=round(entry.load_seconds, 3),
        in_use=entry.in_use > 0,
    )


class ModelListOut(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]


class ModelDeletedOut(BaseModel):
    id: str
    object: Literal["model"] = "model"
    deleted: bool


class ModelsDeletedOut(BaseModel):
    object: Literal["list"] = "list"
    deleted: list[str]


class SeedJobOut(BaseModel):
    job_id: str
    status: str


class SeedStatusOut(BaseModel):
    job_id: str
    status: str
    progress: float
    transcript: str | None
    error: str | None


class JobError(BaseModel):
    code: str
    message: str


class JobOut(BaseModel):
    """A2: the job object."""

    id: str
    object: Literal["job"] = "job"
    status: Status
    progress: float
    duration: float | None
    processed_seconds: float
    segments_done: int
    text: str
    language: str | None
    # The detector's probability for `language`; null when the request named it.
    language_probability: float | None = None
    model: str | None
    error: JobError | None
    attempts: int  # every run, whatever ended it
    crashes: int  # runs the engine died in; max_attempts of these fail the job
    priority: int
    file_name: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    metadata: dict[str, Any] | None
    cancel_requested: bool
    # What the job was asked for (VAD and caption options included), as stored.
    options: TranscribeOptions | None = None
    # Things a user should know about a finished job: "audio_truncated" (the file
    # is damaged or shorter than its header says; what could be decoded is here).
    warnings: list[str] = []
    cached: bool = False  # answered from an earlier job with the same file and options
    refines: str | None = Field(
        default=None,
        description="A live session's second pass: the session's job, whose transcript "
        "this job's replaces when it completes (that job's metadata.refined_by names this one)",
    )
    queue_position: int | None = Field(
        default=None,
        description="While queued: 1 is the next job a worker takes, 2 the one after; "
        "null once a worker has it (or in a job list)",
    )
    eta_s: float | None = Field(
        default=None,
        description="An estimate, not a promise: seconds until the job should be finished, "
        "from the worker's measured throughput (audio seconds per wall second, its last "
        "few minutes of work) and the audio ahead of and sharing the worker with this job; "
        "null when unknown (nothing measured yet, an API node without a worker, a job "
        "whose duration is unknown) or finished",
    )


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobOut]
    has_more: bool
    next_before: str | None


def job_out(job: Job, standing: Standing | None = None) -> dict[str, Any]:
    """The job object as JSON data (for event streams)."""
    return job_model(job, standing).model_dump(mode="json")


def job_model(job: Job, standing: Standing | None = None) -> JobOut:
    error = None
    if job.error_code:
        message = public_message(job.error_message or job.error_code)
        error = {"code": job.error_code, "message": message}
    return JobOut(
        id=job.id,
        status=job.status,
        progress=round(job.progress, 4),
        duration=job.duration,
        processed_seconds=round(job.processed_seconds, 3),
        segments_done=job.segments_done,
        text=job.text,
        language=job.language,
        language_probability=job.language_probability,
        model=job.model,
        error=JobError(**error) if error else None,
        attempts=job.attempts,
        crashes=job.crashes,
        priority=job.priority,
        file_name=job.file_name,
        created_at=iso(job.created_at) or "",
        started_at=iso(job.started_at),
        finished_at=iso(job.finished_at),
        metadata=job.metadata,
        cancel_requested=job.cancel_requested,
        options=job.options,
        warnings=job.warnings,
        cached=job.cached,
        refines=job.refines,
        queue_position=standing.position if standing else None,
        eta_s=standing.eta_s if standing else None,
    )


def json_model(body: BaseModel, status: int = 200) -> web.Response:
    """The response for a declared model: handlers answer through this, so the
    body is exactly what /openapi.json shows."""
    return web.json_response(body.model_dump(mode="json"), status=status)


class WebhookAttemptOut(BaseModel):
    number: int
    at: str
    status_code: int | None  # None: no HTTP answer (timeout, connection error, refused)
    error: str | None
    duration_s: float


class WebhookOut(BaseModel):
    """One webhook delivery of a job."""

    id: str  # the webhook-id header of every attempt
    object: Literal["webhook_delivery"] = "webhook_delivery"
    job_id: str
    event: str
    url: str
    state: DeliveryState
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: str
    next_attempt_at: str | None  # set only while pending
    history: list[WebhookAttemptOut]


class WebhookList(BaseModel):
    object: Literal["list"] = "list"
    data: list[WebhookOut]


def webhooks_out(deliveries: list[Delivery]) -> list[WebhookOut]:
    out = []
    for d in deliveries:
        last = d.attempts[-1] if d.attempts else None
        out.append(
            WebhookOut(
                id=d.id,
                job_id=d.job_id,
                event=d.event,
                url=d.url,
                state=d.state,
                attempts=len(d.attempts),
                last_status_code=last.status_code if last else None,
                last_error=last.error if last else None,
                created_at=iso(d.created_at) or "",
                next_attempt_at=iso(d.next_attempt_at),
                history=[
                    WebhookAttemptOut(
                        number=a.number,
                        at=iso(a.at) or "",
                        status_code=a.status_code,
                        error=a.error,
                        duration_s=a.duration_s,
                    )
                    for a in d.attempts
                ],
            )
        )
    return out


def caption_style(options: TranscribeOptions, query: Mapping[str, str]) -> CaptionStyle:
    """The cue layout of a download: the job's own, with what ``query`` overrides
    (validated as the job's options are, so a bad value is a 400 naming it)."""
    asked = {n: query[n] for n in CAPTION_OPTIONS if n in query}
    if asked:
        options = parse(TranscribeOptions, {**options.model_dump(), **asked})
    return style_of(options)


def parse(model: type[M], data: dict[str, Any]) -> M:
    """Validate `data`; the first problem becomes an InvalidRequest naming the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        msg = err["msg"] if err["type"] != "extra_forbidden" else "unknown field"
        raise InvalidRequest(f"{field}: {msg}" if field else msg, param=field) from None
