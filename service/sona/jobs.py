"""The job model: statuses, allowed transitions, options, and the records the
store hands back. Pure data, no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

from sona import wire
from sona.errors import InvalidJobId

JOB_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
METADATA_MAX_BYTES = 4096
# The codes Whisper knows, as faster-whisper lists them
# (faster_whisper.tokenizer._LANGUAGE_CODES; a test keeps the two equal). Copied
# because the daemon does not import the engine's libraries.
_WHISPER_CODES = (
    "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu "
    "ha haw he hi hr ht hu hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml "
    "mn mr ms mt my ne nl nn no oc pa pl ps pt ro ru sa sd si sk sl sn so sq sr su sv sw "
    "ta te tg th tk tl tr tt uk ur uz vi yi yo zh yue"
)
LANGUAGES = frozenset(_WHISPER_CODES.split())


# Validation context of options read back from the store: a row written before
# languages were checked may name one Whisper lacks, and must still load.
STORED = {"stored": True}


def _known_language(code: str | None, info: ValidationInfo) -> str | None:
    stored = bool(info.context and info.context.get("stored"))
    if code is not None and code not in LANGUAGES and not stored:
        raise PydanticCustomError(
            "unknown_language",
            "unknown language code '{code}': not in faster-whisper's (Whisper's) language "
            "list ({known}); leave language unset to have it detected",
            {"code": code[:32], "known": ", ".join(sorted(LANGUAGES))},
        )
    return code


# A language a request names: a Whisper language code, or None (detect it).
# The schema lists the codes, so /openapi.json says which are valid.
_LanguageCode = Annotated[str, WithJsonSchema({"type": "string", "enum": sorted(LANGUAGES)})]
Language = Annotated[_LanguageCode | None, AfterValidator(_known_language)]

# Options with bounds that more than one request model declares (TranscribeOptions,
# the OpenAI form), so /openapi.json shows the same limits for both. The caption
# defaults live in captions.py, the VAD ones in engine/whisper.py.
VadThreshold = Annotated[float | None, Field(gt=0.0, lt=1.0)]
MinSilenceMs = Annotated[int | None, Field(ge=0, le=10_000)]
SpeechPadMs = Annotated[int | None, Field(ge=0, le=2_000)]
MaxLineWidth = Annotated[int | None, Field(ge=10, le=200)]
MaxLineCount = Annotated[int | None, Field(ge=1, le=10)]
MaxCueDuration = Annotated[float | None, Field(ge=1.0, le=60.0)]


class Status(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset(Status(s) for s in wire.FINISHED)

# Every status write is a guarded UPDATE built from this table: a write whose
# current status is not listed here matches no row and raises InvalidTransition.
# processing → queued happens only through crash recovery and drain requeue.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset({Status.PROCESSING, Status.CANCELLED}),
    Status.PROCESSING: frozenset(
        {Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.QUEUED}
    ),
    Status.COMPLETED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELLED: frozenset(),
}


def sources_of(target: Status) -> list[Status]:
    """The statuses a job may be in for a write to ``target`` to be legal."""
    return [s for s, targets in TRANSITIONS.items() if target in targets]


def validate_job_id(job_id: str) -> str:
    """Job ids come from clients and URLs: only a safe alphabet is accepted."""
    if not JOB_ID_RE.match(job_id):
        raise InvalidJobId(
            "job id must be 1-64 characters of letters, digits, '_' or '-'", param="job_id"
        )
    return job_id


class DecodeChoices(BaseModel):
    """The decoding and caption choices every transcription request offers,
    declared once: a job's options (``TranscribeOptions``) and the OpenAI form
    (``api/openai_schemas.py``) both are these, with their own extras."""

    model: str | None = None
    language: Language = None
    prompt: str | None = None
    hotwords: str | None = None
    vad_filter: bool | None = None  # None: on (F9); off cuts plain chunk_s slices
    diarize: Literal["none", "channels"] = "none"
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)
    beam_size: int | None = Field(default=None, ge=1, le=10)
    # Sequential decoding, each 30 s window conditioned on the text before it
    # (faster-whisper's default mode): never batched, so slower.
    condition_on_previous_text: bool = False
    # Silero VAD, as faster-whisper's VadOptions names them; None: Sona's default
    # (engine/whisper.py). Stored with the job, so a resume cuts the same chunks.
    # Unused with vad_filter=false (refusing the pair would refuse requests that
    # /openapi.json calls valid).
    vad_threshold: VadThreshold = None
    min_silence_duration_ms: MinSilenceMs = None
    speech_pad_ms: SpeechPadMs = None
    # SRT/VTT cue layout (captions.py); None: the common subtitle defaults.
    # Stored with the job: its downloads use them unless the request overrides.
    max_line_width: MaxLineWidth = None
    max_line_count: MaxLineCount = None
    max_cue_duration: MaxCueDuration = None

    @field_validator("language", mode="before")
    @classmethod
    def _language(cls, v: object) -> object:
        return None if v == "" else v  # an empty form field means "detect"


class TranscribeOptions(DecodeChoices):
    """What a caller may ask of one transcription; shared by jobs and the OpenAI API."""

    model_config = ConfigDict(extra="forbid")

    task: Literal["transcribe", "translate"] = "transcribe"
    word_timestamps: bool = False

    @property
    def vad_tuned(self) -> bool:
        return any(
            v is not None
            for v in (self.vad_threshold, self.min_silence_duration_ms, self.speech_pad_ms)
        )


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    probability: float = 0.0


@dataclass(frozen=True)
class Segment:
    """One finished piece of transcript, as stored and rendered."""

    index: int
    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0
    seek: int = 0
    speaker: str | None = None


# A live session's job (``live_record.py``) holds its session's id here, and
# the model of its second pass, if one was asked for, there.
LIVE_KEY = "live_session"
REFINE_KEY = "refine_model"


@dataclass
class Job:
    """A job row as the store returns it."""

    id: str
    status: Status
    options: TranscribeOptions
    model: str | None
    priority: int
    file_path: str
    file_name: str
    file_sha256: str
    file_size: int
    created_at: float
    attempts: int = 0  # every run, whatever ended it
    max_attempts: int = 3
    crashes: int = 0  # runs that the engine process died in; max_attempts bounds these
    chunks_done: int = 0  # chunks whose segments are stored: a re-run resumes after them
    idempotency_key: str | None = None
    callback_url: str | None = None
    metadata: dict[str, Any] | None = None
    # Answer from a completed job with the same file and options, if one exists (A11).
    dedupe: bool = False
    duration: float | None = None
    processed_seconds: float = 0.0
    segments_done: int = 0
    text: str = ""
    language: str | None = None
    # How sure the model was of a detected language; None when it was asked for.
    language_probability: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    cancel_requested: bool = False
    lease_token: str | None = None
    warnings: list[str] = field(default_factory=list)  # e.g. audio_truncated
    cached: bool = False  # answered from an earlier job's result (A11)
    # A live session's second pass (live_record.py): the job whose transcript
    # this one's replaces when it completes. Set by Sona only, never by a request.
    refines: str | None = None

    @property
    def live(self) -> bool:
        """A live session's recording: its stored chunks are the session's turns,
        not cuts of its file, so a re-run goes on from ``processed_seconds``."""
        return bool((self.metadata or {}).get(LIVE_KEY))

    @property
    def refine_model(self) -> str | None:
        """A live session's job: the model of the second pass queued when it
        completes, if the session asked for one. A file job has none, whatever
        its metadata says (only a live job's metadata is Sona's own)."""
        return (self.metadata or {}).get(REFINE_KEY) if self.live else None

    @property
    def progress(self) -> float:
        if self.status == Status.COMPLETED:
            return 1.0
        if not self.duration:
            return 0.0
        return max(0.0, min(1.0, self.processed_seconds / self.duration))


@dataclass(frozen=True)
class NewJob:
    """What the API hands the store to create a job."""

    id: str
    options: TranscribeOptions
    model: str | None
    priority: int
    file_path: str
    file_name: str
    file_sha256: str
    file_size: int
    duration: float | None
    max_attempts: int
    idempotency_key: str | None = None
    callback_url: str | None = None
    metadata: dict[str, Any] | None = None
    # Answer from a completed job with the same file and options, if one exists (A11).
    dedupe: bool = False
    refines: str | None = None  # see Job.refines
