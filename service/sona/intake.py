"""Admitting a job: from a stored upload and options to a queued row. Shared by
every route that submits work (/v1/jobs, /transcribe, the OpenAI endpoints), so
the limits, model resolution and idempotency rules exist once."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sona.audio import probe
from sona.crashpoints import crash_point
from sona.engine import sequential_too_long
from sona.engine.registry import OPENAI_ALIASES, ModelRegistry, english_only
from sona.errors import (
    AddressRefused,
    AudioTooLong,
    InvalidCallbackUrl,
    InvalidRequest,
    MetadataTooLarge,
    NoModel,
    QueueFull,
    UnsupportedLanguage,
    english_only_message,
)
from sona.jobs import LIVE_KEY, METADATA_MAX_BYTES, Job, NewJob, TranscribeOptions, validate_job_id
from sona.netguard import check_resolved
from sona.store import JobStore
from sona.uploads import StoredUpload

SYNC_PRIORITY = 1_000_000  # synchronous API requests jump the queue (C4)
CALLBACK_URL_MAX = 2048


@dataclass(frozen=True)
class IntakeConfig:
    default_model: str | None
    max_audio_seconds: float
    max_queue: int
    max_attempts: int
    allow_private_urls: bool = False  # callback_url targets (E3)
    max_sequential_seconds: float = float("inf")  # condition_on_previous_text


@dataclass(frozen=True)
class Submission:
    options: TranscribeOptions
    job_id: str | None = None
    idempotency_key: str | None = None
    priority: int = 0
    metadata: dict[str, Any] | None = None
    callback_url: str | None = None
    dedupe: bool = False  # A11: answer from a completed job with this file and options


def check_metadata(metadata: dict[str, Any] | None) -> dict[str, Any] | None:
    if metadata is not None and len(json.dumps(metadata)) > METADATA_MAX_BYTES:
        raise MetadataTooLarge(
            f"metadata is larger than {METADATA_MAX_BYTES} bytes as JSON", param="metadata"
        )
    if metadata is not None and LIVE_KEY in metadata:  # a file job must never pass for one
        raise InvalidRequest(
            f"the metadata key {LIVE_KEY!r} is Sona's own: it marks a live session's job",
            param="metadata",
        )
    return metadata


class Intake:
    def __init__(self, store: JobStore, models: ModelRegistry, config: IntakeConfig) -> None:
        self.store = store
        self.models = models
        self.config = config

    def resolve_model(self, requested: str | None) -> str:
        """The concrete model a job will run on (B1): the one asked for, else the
        default, else the most recently loaded; NoModel (503) when none exists."""
        if requested and requested not in OPENAI_ALIASES:
            return self.models.canonical(requested)
        if self.config.default_model:
            return self.models.canonical(self.config.default_model)
        loaded = sorted(self.models.entries(), key=lambda e: e.last_used)
        if loaded:
            return loaded[-1].id
        raise NoModel(
            "no model is loaded and no default model is configured: load one with "
            "POST /v1/models/load or name one in the request",
            param="model",
        )

    async def known_model(self, requested: str | None) -> str:
        """``resolve_model``, found now: an unknown model fails the request
        (``ModelNotFound``), not the job."""
        model = self.resolve_model(requested)
        if not self.models.is_loaded(model):
            await self.models.locate(model)
        return model

    async def check_callback(self, url: str | None) -> None:
        """Refuse a callback_url the delivery would refuse (E3), with the reason,
        before anything is queued."""
        if url is None:
            return
        if len(url) > CALLBACK_URL_MAX:
            raise InvalidCallbackUrl(
                f"callback_url is longer than {CALLBACK_URL_MAX} characters", param="callback_url"
            )
        try:
            await check_resolved(url, allow_private=self.config.allow_private_urls)
        except AddressRefused as exc:
            raise InvalidCallbackUrl(
                f"callback_url refused: {exc.message}", param="callback_url"
            ) from None

    async def admit(self, upload: StoredUpload, sub: Submission) -> tuple[Job, bool]:
        """Create the job for ``upload``; (job, created). The upload file is removed
        when the job is refused or an existing job answers."""
        try:
            job, created = await self._admit(upload, sub)
        except BaseException:
            upload.path.unlink(missing_ok=True)
            raise
        if not created:
            upload.path.unlink(missing_ok=True)
        return job, created

    def _check_duration(self, duration: float | None, options: TranscribeOptions) -> None:
        """Refuse by the header's duration (the engine's sample counter holds
        the same limits against a header that lies)."""
        if duration is None:
            return
        if duration > self.config.max_audio_seconds:
            raise AudioTooLong(
                f"audio is {duration:.0f} s long; the limit is "
                f"{self.config.max_audio_seconds:.0f} s",
                param="file",
            )
        limit = self.config.max_sequential_seconds
        if options.condition_on_previous_text and duration > limit:
            raise sequential_too_long(limit, duration)

    async def _admit(self, upload: StoredUpload, sub: Submission) -> tuple[Job, bool]:
        if sub.job_id is not None:
            validate_job_id(sub.job_id)
        await self.check_callback(sub.callback_url)
        model = await self.known_model(sub.options.model)
        language = sub.options.language
        if language not in (None, "en") and english_only(model):
            raise UnsupportedLanguage(
                english_only_message(Path(model).name, str(language)), param="language"
            )
        duration, _channels = await asyncio.to_thread(probe, upload.path)
        self._check_duration(duration, sub.options)
        crash_point("before_commit")  # the file is stored, the row not yet
        if await self.store.queue_size() >= self.config.max_queue:
            raise QueueFull("the queue is full; try again later", retry_after=30)
        return await self.store.create(
            NewJob(
                id=sub.job_id or uuid.uuid4().hex,
                options=sub.options.model_copy(update={"model": model}),
                model=model,
                priority=sub.priority,
                file_path=str(upload.path),
                file_name=upload.name,
                file_sha256=upload.sha256,
                file_size=upload.size,
                duration=duration,
                max_attempts=self.config.max_attempts,
                idempotency_key=sub.idempotency_key,
                callback_url=sub.callback_url,
                metadata=check_metadata(sub.metadata),
                dedupe=sub.dedupe,
            )
        )
