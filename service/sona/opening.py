"""A claimed job made ready to run: its model acquired and its engine spec
built (a live session's recording that its dead daemon left unsealed is
sealed first). A job that cannot be opened is ended here: a model load that
kills or hangs the engine counts as a crash (retried, never failed at once),
an unknown or broken model and an unreadable upload fail the job — never the
worker."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import structlog

from sona.audio import probe
from sona.endings import Endings
from sona.engine import JobSpec
from sona.engine.registry import ModelEntry, ModelRegistry
from sona.errors import EngineCrashed, ModelLoadFailed, SonaError
from sona.flight import job_spec
from sona.jobs import Status
from sona.live_record import seal
from sona.store import Claim

log = structlog.get_logger("sona.worker")


class Opener:
    """Acquires a claim's model and builds its spec, or ends the job."""

    def __init__(
        self, models: ModelRegistry, endings: Endings, *, beam_size: int, max_seconds: float
    ) -> None:
        self.models = models
        self.endings = endings
        self.beam_size = beam_size  # for a job that names none
        self.max_seconds = max_seconds

    async def open(self, claim: Claim) -> tuple[ModelEntry, JobSpec] | None:
        """The model (acquired: release it when the job ends) and the spec; None
        when the job was ended instead."""
        job = claim.job
        bound = log.bind(job_id=job.id, model=job.model, attempt=job.attempts)
        try:
            entry = await self.models.acquire(job.model or "")
        except EngineCrashed as exc:  # died or hung loading: retried like a crash mid-job
            bound.warning("model.load_crashed", reason=exc.message)
            await self.endings.crashed(claim, blamed=not exc.deliberate)
            return None
        except SonaError as exc:
            await self.endings.finish(claim, Status.FAILED, exc.code, exc.message)
            return None
        except Exception as exc:  # a broken model directory fails the job, not the worker
            bound.exception("model.load_failed")
            err = ModelLoadFailed(f"{type(exc).__name__}: {exc}")
            await self.endings.finish(claim, Status.FAILED, err.code, err.message)
            return None
        try:
            spec = await self._spec(claim, entry)
        except SonaError as exc:  # the upload is gone or unreadable
            self.models.release(entry)
            await self.endings.finish(claim, Status.FAILED, exc.code, exc.message)
            return None
        return entry, spec

    async def _spec(self, claim: Claim, entry: ModelEntry) -> JobSpec:
        if claim.job.live:  # its daemon died: the WAV's header still says "to the end"
            # A missing or unreadable file is the engine's to report, as for any job.
            with contextlib.suppress(OSError):
                await asyncio.to_thread(seal, Path(claim.job.file_path))
        channels = 1
        if claim.job.options.diarize == "channels":  # probing reads the file: off the loop
            info = await asyncio.to_thread(probe, Path(claim.job.file_path))
            channels = 2 if info[1] >= 2 else 1
        return job_spec(
            claim, entry, beam_size=self.beam_size, max_seconds=self.max_seconds, channels=channels
        )
