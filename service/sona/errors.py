"""Every error Sona raises on purpose, in one tree. No HTTP knowledge here:
``api/errors.py`` maps each class to a status code.

SonaError                      base; ``code`` is the stable machine-readable name
├── InvalidRequest             bad parameter or body                  (invalid_request)
│   ├── InvalidJobId           a job id that is not [A-Za-z0-9_-]{1,64} (invalid_job_id)
│   ├── MetadataTooLarge       metadata over 4 KB                      (metadata_too_large)
│   ├── InvalidQuery           a search query: unbalanced ", no word   (invalid_query)
│   ├── QueryTooBroad          a search that cannot be ranked in time  (query_too_broad)
│   └── UnsupportedLanguage    a language the model cannot do (English-only) (unsupported_language)
├── Unauthorized               missing/wrong API key                   (unauthorized)
├── Forbidden                  Host header not allowed                 (forbidden)
├── NotFound                   unknown job / route                     (not_found)
│   └── ModelNotFound          a model name or path that cannot be resolved (model_not_found)
├── Conflict                   state does not allow it                 (conflict)
│   ├── InvalidTransition      guarded status UPDATE matched no row    (invalid_transition)
│   ├── JobNotFinished         transcript asked before completion      (job_not_finished)
│   ├── IdempotencyConflict    same id / key, different file           (idempotency_conflict)
│   └── NoEngine               an API node (--no-worker) runs no models (no_engine)
├── PayloadTooLarge            upload over the size limit              (file_too_large)
├── UnsupportedMedia           content is not audio                    (unsupported_media)
├── UpgradeRequired            a plain request to a WebSocket route    (upgrade_required)
├── EmptyFile                  zero-byte upload                        (empty_file)
├── AudioTooLong               over the duration limit                 (audio_too_long)
├── UrlRefused                 a fetch URL refused or failing          (url_refused)
├── InvalidCallbackUrl         a callback_url refused at submit (E3)   (invalid_callback_url)
├── AddressRefused             netguard's refusal (internal: callers translate it) (address_refused)
├── InvalidAudio               audio that cannot be decoded            (invalid_audio)
├── Busy                       wait too long / too many clients; retry_after (busy)
│   └── QueueFull              queue at its depth limit                (queue_full)
├── NoModel                    nothing loaded and no default model     (no_model)
├── StorageFull                disk full while writing                 (insufficient_storage)
├── DataDirInUse               another daemon owns the data directory  (data_dir_in_use)
├── UploadTimeout              client stopped sending mid-upload       (upload_timeout)
├── Cancelled                  the job was cancelled while running     (cancelled)
├── JobTimeout                 the job ran past its wall-time limit    (timeout)
├── ModelLoadFailed            a model directory that will not load    (model_load_failed)
├── WorkerCrashed              the engine died on this job max_attempts times (worker_crashed)
├── EngineError                the engine failed on a job              (engine_error)
├── EngineCrashed              the engine child process died (internal; jobs are requeued)
├── ConfigError                unknown key, missing or malformed config file (bad_config)
└── StartupFailed              `sona serve` cannot start: port_in_use, data_dir_unwritable, …
"""

from __future__ import annotations

from os import PathLike


class SonaError(Exception):
    """Base of every deliberate error. ``param`` names the offending input, if any."""

    code = "internal_error"
    # Paths the message may show a client (ones the operator configured, such
    # as the model directory); every other server path is hidden.
    public_paths: tuple[str, ...] = ()

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequest(SonaError):
    code = "invalid_request"


class InvalidJobId(InvalidRequest):
    code = "invalid_job_id"


class MetadataTooLarge(InvalidRequest):
    code = "metadata_too_large"


class InvalidQuery(InvalidRequest):
    """A search query that is no query: unbalanced quotes, no word, too long."""

    code = "invalid_query"


class QueryTooBroad(InvalidRequest):
    """A search whose words are in so much of the archive that its matches
    cannot be ranked within the search deadline: more words or a filter."""

    code = "query_too_broad"


class UnsupportedLanguage(InvalidRequest):
    """A language the job's model cannot transcribe: an English-only model
    asked for another. At submit when the model's name says so (``*.en``),
    else as the job's error once the engine has loaded it."""

    code = "unsupported_language"


def english_only_message(model: str, language: str) -> str:
    return (
        f"model {model} is English-only and cannot transcribe language {language!r}: "
        "name a multilingual model (such as small or large-v3), or leave language "
        "unset or 'en'"
    )


class Unauthorized(SonaError):
    code = "unauthorized"


class Forbidden(SonaError):
    code = "forbidden"


class NotFound(SonaError):
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(
        self, message: str, *, param: str | None = None, shown: PathLike[str] | None = None
    ) -> None:
        """``shown``: the directory searched (the configured model directory),
        which the client may see: it is where the operator puts models."""
        super().__init__(message, param=param)
        if shown is not None:
            self.public_paths = (str(shown),)


class Conflict(SonaError):
    code = "conflict"


class InvalidTransition(Conflict):
    code = "invalid_transition"


class JobNotFinished(Conflict):
    code = "job_not_finished"

    def __init__(self, message: str, *, status: str) -> None:
        super().__init__(message)
        self.status = status


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"


class NoEngine(Conflict):
    """Model operations on an API node (``sona serve --no-worker``): its workers
    load models, it has no engine of its own."""

    code = "no_engine"


class UpgradeRequired(SonaError):
    """A plain HTTP request to a route that speaks only WebSocket."""

    code = "upgrade_required"


class PayloadTooLarge(SonaError):
    code = "file_too_large"


class UnsupportedMedia(SonaError):
    code = "unsupported_media"


class EmptyFile(SonaError):
    code = "empty_file"


class AudioTooLong(SonaError):
    code = "audio_too_long"


class UrlRefused(SonaError):
    code = "url_refused"


class InvalidCallbackUrl(SonaError):
    code = "invalid_callback_url"


class AddressRefused(SonaError):
    """An outbound address the E3 rules refuse; ``fetch`` and the callback check
    turn it into their own error, the dispatcher into a dead delivery."""

    code = "address_refused"


class InvalidAudio(SonaError):
    code = "invalid_audio"


class Busy(SonaError):
    code = "busy"

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueueFull(Busy):
    code = "queue_full"


class NoModel(SonaError):
    code = "no_model"


class StorageFull(SonaError):
    code = "insufficient_storage"


class DataDirInUse(SonaError):
    """Start-up only: another live process holds the data directory's lock."""

    code = "data_dir_in_use"


class UploadTimeout(SonaError):
    code = "upload_timeout"


class Cancelled(SonaError):
    code = "cancelled"


class JobTimeout(SonaError):
    code = "timeout"


class ModelLoadFailed(SonaError):
    code = "model_load_failed"


class WorkerCrashed(SonaError):
    code = "worker_crashed"


class EngineError(SonaError):
    """The engine failed on this job for a reason no retry will fix."""

    code = "engine_error"


class EngineCrashed(SonaError):
    """The engine child process died; whatever it had in flight is lost.
    ``deliberate``: Sona killed it (for another job's hung step), so the
    waiting request is not to blame."""

    code = "engine_crashed"

    def __init__(self, message: str, *, deliberate: bool = False) -> None:
        super().__init__(message)
        self.deliberate = deliberate


class ConfigError(SonaError):
    """The configuration cannot be used; the message names the file or key."""

    code = "bad_config"


class StartupFailed(SonaError):
    """``sona serve`` stopped before serving; ``code`` says why (the sidecar's
    error line carries it: ``port_in_use``, ``data_dir_unwritable``, …)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def from_code(code: str, message: str) -> SonaError:
    """Rebuild the error a job failed with (its stored ``error_code``), so a
    synchronous request answers with the same status a submit would have."""
    stack: list[type[SonaError]] = [SonaError]
    while stack:
        cls = stack.pop()
        if cls.code == code and cls not in (Busy, JobNotFinished):
            return cls(message)
        stack.extend(cls.__subclasses__())
    return EngineError(message)
