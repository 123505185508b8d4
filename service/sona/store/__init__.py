"""The job store: where jobs, their segments and their state live.

``JobStore`` is the contract both back-ends keep; ``open_store(url)`` picks one.
Every status change is a guarded UPDATE built from ``jobs.TRANSITIONS``; every
write a worker makes is fenced by the lease token it got at claim time, so a
stale worker's late writes change nothing."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from sona.jobs import Job, NewJob, Segment, Status
from sona.textsearch import Cursor, Query, SearchFilters, SearchHit


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


class DeliveryState(StrEnum):
    """A webhook delivery's state. Only `pending` is ever sent."""

    PENDING = "pending"  # due at ``next_attempt_at``
    DELIVERED = "delivered"  # a 2xx answer
    DEAD = "dead"  # attempts used up, or an answer no retry can change
    DISABLED = "disabled"  # the receiver answered 410 Gone


@dataclass(frozen=True)
class DeliveryAttempt:
    """One try at sending a delivery, as recorded."""

    number: int  # 1, 2, ...
    at: float
    status_code: int | None  # None: no HTTP answer (timeout, refused, ...)
    error: str | None  # None for a 2xx
    duration_s: float


@dataclass(frozen=True)
class Delivery:
    """A webhook outbox row: one event of one job for its ``callback_url``.
    Its ``id`` is the ``webhook-id`` header of every attempt."""

    id: str
    job_id: str
    event: str  # job.completed | job.failed | job.cancelled
    url: str
    state: DeliveryState
    created_at: float
    next_attempt_at: float | None
    attempts: list[DeliveryAttempt]


@dataclass(frozen=True)
class DeliveryClaim:
    """A due delivery a dispatcher now owns, with the token that fences its
    ``record_attempt``."""

    delivery: Delivery
    token: str


@dataclass(frozen=True)
class AttemptOutcome:
    """What one attempt found, and what follows: ``state`` is the delivery's
    new state; ``next_attempt_at`` is set only when it stays ``pending``."""

    attempt: DeliveryAttempt
    state: DeliveryState
    next_attempt_at: float | None = None


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

    async def search(
        self, query: Query, filters: SearchFilters, *, limit: int, after: Cursor | None
    ) -> tuple[list[SearchHit], bool]:
        """Segments of completed jobs matching ``query`` and ``filters``, best
        first (a score of the segment alone, then job id, then index), the
        page after ``after``: up to ``limit`` hits, and whether more follow.
        The index is written in the same transaction as the segments, and
        deleting a job removes its entries (store/search.py)."""
        ...

    async def queue_size(self) -> int: ...

    async def queue_ahead(self, job: Job) -> tuple[int, float]:
        """How many queued jobs a claim would take before ``job`` (higher
        priority, or as urgent and older), and their summed duration in
        seconds (unknown durations count 0). For estimates only."""
        ...

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

    async def start_live(self, new: NewJob, *, worker_id: str, lease_s: float) -> Claim:
        """A live session's job (``sona/live_record.py``): inserted already
        ``processing`` under a lease of ``worker_id``, so no worker claims it
        while the session records into it (attempts 1)."""
        ...

    async def heartbeat(self, claim: Claim, lease_s: float) -> Lease:
        """Extend the lease, and say whether a cancel was asked for."""
        ...

    async def set_info(
        self,
        claim: Claim,
        *,
        duration: float | None,
        language: str | None,
        warnings: list[str] | None = None,
        language_probability: float | None = None,
    ) -> None:
        """The decoded duration (not the header's; None: not known yet, as for a
        live session still recording), the language (with its probability when
        it was detected), and warnings such as ``audio_truncated``."""
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

    # Every write that ends a job (finish, engine_crashed giving up, cancel of a
    # queued job) inserts, IN THE SAME TRANSACTION, one pending webhook delivery
    # when the job has a callback_url: event ``job.<status>``, a fresh id
    # (``msg_<32 hex>``), due at once. So a crash can neither lose nor invent one.

    async def finish(
        self,
        claim: Claim,
        status: Status,
        *,
        error_code: str | None = None,
        error_message: str | None = None,
        refinement: NewJob | None = None,
    ) -> Job:
        """Move a processing job to ``status`` (completed/failed/cancelled/queued);
        a terminal status writes the job's webhook delivery with it.

        ``refinement`` (completing a live session's job only): a second pass
        over its audio, queued in the same transaction, its ``refines`` set to
        this job, whose metadata gets ``refined_by``. A job with ``refines``
        that completes replaces that job's transcript (segments, text,
        language, model) with its own in the same transaction, with a
        ``job.transcript_replaced`` delivery for it; unless that job is gone or
        not completed. Failed or cancelled, it replaces nothing."""
        ...

    async def engine_crashed(self, claim: Claim) -> Job:
        """The engine died with this job in flight: count the crash, then requeue
        it, or fail it (``worker_crashed``, with its webhook delivery) once
        crashes reach ``max_attempts``."""
        ...

    async def cancel(self, job_id: str) -> Job:
        """Queued → cancelled at once (with its webhook delivery); processing →
        cancel requested (the worker finishes it); cancelled → unchanged;
        completed/failed → InvalidTransition."""
        ...

    # -- webhook deliveries (the outbox; service/dispatcher.py sends them) -----

    async def claim_deliveries(self, *, limit: int, lease_s: float) -> list[DeliveryClaim]:
        """Take up to ``limit`` deliveries that are ``pending``, due
        (``next_attempt_at <= now``) and not leased (no lease, or one expired),
        oldest due first; lease each for ``lease_s`` seconds to a fresh token, in
        one transaction, so exactly one dispatcher of all sharing the store sends
        each. PostgreSQL: ``SELECT … FOR UPDATE SKIP LOCKED`` then ``UPDATE``. A
        dispatcher that dies mid-attempt loses the lease when it expires and the
        delivery is sent again (at least once; receivers dedupe on the id)."""
        ...

    async def record_attempt(self, claim: DeliveryClaim, outcome: AttemptOutcome) -> Delivery:
        """Append ``outcome.attempt`` and set the state, ``next_attempt_at`` and no
        lease, in one transaction, fenced by the claim's token (a stale claim
        raises ``InvalidTransition`` and changes nothing). ``DISABLED`` also
        disables every other pending delivery of the same job to the same URL."""
        ...

    async def deliveries(self, job_id: str) -> list[Delivery]:
        """The job's deliveries with their attempts, oldest first (``[]`` for a
        job without a callback_url; ``NotFound`` for an unknown job)."""
        ...

    async def next_delivery_at(self) -> float | None:
        """When the earliest pending delivery can be claimed: its due time, or
        its lease's end while an attempt holds it (None: none pending)."""
        ...

    async def recover(self, *, is_dead: DeadOwner) -> Recovery:
        """Requeue processing jobs whose lease expired or whose owner is dead. The
        daemon's death is not the job's fault: crashes are not counted here. A
        store shared across machines (PostgreSQL) judges by lease expiry only:
        ``is_dead`` can check only processes on this host."""
        ...

    async def finished_before(self, ts: float) -> list[Job]: ...

    async def delete(self, job_id: str) -> None: ...

    async def file_paths(self) -> set[str]: ...

    async def close(self) -> None: ...


class DeadOwner(Protocol):
    def __call__(self, worker_id: str) -> bool: ...


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


async def open_store(url: str) -> JobStore:
    """``sqlite:PATH`` (the default, one machine) or ``postgresql://…`` /
    ``postgres://…`` (many workers on many machines, docs/scaling.md)."""
    if url.startswith("sqlite:"):
        from sona.store.sqlite import SqliteStore

        return await SqliteStore.open(url.removeprefix("sqlite:"))
    if url.startswith(POSTGRES_SCHEMES):
        from sona.store.postgres import PostgresStore

        return await PostgresStore.open(url)
    raise ValueError(
        f"unsupported store URL {url.split(':', 1)[0]!r}: use sqlite:PATH or postgresql://…"
    )
