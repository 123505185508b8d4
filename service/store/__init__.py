"""The job store: where jobs, their segments and their state live.

``JobStore`` is the contract both back-ends keep; ``open_store(url)`` picks one.
Every status change is a guarded UPDATE built from ``jobs.TRANSITIONS``; every
write a worker makes is fenced by the lease token it got at claim time, so a
stale worker's late writes change nothing."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from service.jobs import Job, NewJob, Segment, Status


@dataclass(frozen=True)
class Claim:
    """A job a worker now owns, with the token that fences its writes."""

    job: Job
    token: str


class Lease(StrEnum):
    """What a heartbeat found."""

    HELD = "held"
    CANCEL_REQUESTED = "cancel_requested"
    LOST = "lost"  # another worker owns the job now, or it ended


@dataclass(frozen=True)
class Recovery:
    requeued: list[str]


class JobStore(Protocol):
    async def create(self, new: NewJob) -> tuple[Job, bool]:
        """Insert ``new``; for a known job id or idempotency key with the same file
        hash return ``(existing, False)``, with a different file raise
        ``IdempotencyConflict``. With ``new.dedupe`` and a completed job of the
        same file hash and options, the new job is created completed at once with
        that job's transcript and ``cached`` set (A11)."""
        ...

    async def get(self, job_id: str) -> Job:
        """The job, or ``NotFound``."""
        ...

    async def list_jobs(
        self, *, status: Status | None, limit: int, before: str | None
    ) -> tuple[list[Job], bool]:
        """Newest first; ``before`` is a job id cursor. Returns (jobs, has_more)."""
        ...

    async def segments(self, job_id: str, *, after: int = -1) -> list[Segment]: ...

    async def queue_size(self) -> int: ...

    async def claim(
        self,
        *,
        worker_id: str,
        prefer_models: list[str],
        lease_s: float,
        min_priority: int | None = None,
    ) -> Claim | None:
        """Atomically take the best queued job (at least ``min_priority``):
        priority, then loaded model, then age. Counts the attempt; keeps the
        chunks an earlier attempt stored, so the run resumes after them."""
        ...

    async def heartbeat(self, claim: Claim, lease_s: float) -> Lease:
        """Extend the lease, and say whether a cancel was asked for."""
        ...

    async def set_info(
        self,
        claim: Claim,
        *,
        duration: float,
        language: str | None,
        warnings: list[str] | None = None,
    ) -> None:
        """The decoded duration (not the header's), the language, and warnings
        such as ``audio_truncated``."""
        ...

    async def add_chunks(
        self,
        claim: Claim,
        *,
        first: int,
        count: int,
        segments: list[Segment],
        processed_seconds: float,
    ) -> Lease:
        """Store the segments of chunks ``first .. first+count-1`` (the next ones:
        a job's chunks are stored in order, each once) with progress, in one
        transaction. Says whether to go on."""
        ...

    async def finish(
        self,
        claim: Claim,
        status: Status,
        *,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> Job:
        """Move a processing job to ``status`` (completed/failed/cancelled/queued)."""
        ...

    async def engine_crashed(self, claim: Claim) -> Job:
        """The engine died with this job in flight: count the crash, then requeue
        it, or fail it (``worker_crashed``) once crashes reach ``max_attempts``."""
        ...

    async def cancel(self, job_id: str) -> Job:
        """Queued → cancelled at once; processing → cancel requested (the worker
        finishes it); cancelled → unchanged; completed/failed → InvalidTransition."""
        ...

    async def recover(self, *, is_dead: DeadOwner) -> Recovery:
        """Requeue processing jobs whose lease expired or whose owner is dead. The
        daemon's death is not the job's fault: crashes are not counted here."""
        ...

    async def finished_before(self, ts: float) -> list[Job]: ...

    async def delete(self, job_id: str) -> None: ...

    async def file_paths(self) -> set[str]: ...

    async def close(self) -> None: ...


class DeadOwner(Protocol):
    def __call__(self, worker_id: str) -> bool: ...


async def open_store(url: str) -> JobStore:
    """``sqlite:PATH`` (the default) or ``postgres://…`` (not built yet)."""
    if url.startswith("sqlite:"):
        from service.store.sqlite import SqliteStore

        return await SqliteStore.open(url.removeprefix("sqlite:"))
    raise ValueError(f"unsupported store URL {url.split(':', 1)[0]!r}: use sqlite:PATH")
