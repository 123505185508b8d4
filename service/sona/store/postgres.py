"""PostgreSQL job store (asyncpg): many workers on many machines share it.

The same contract and the same statements as ``store/sqlite.py`` (``sql.py``
holds them); what differs:

* claims take the row with ``FOR UPDATE SKIP LOCKED``, so workers racing for
  the queue never wait on each other nor take the same job;
* every timestamp comes from the database's clock, so leases mean the same on
  machines whose clocks disagree;
* ``recover`` judges liveness by lease expiry only: a worker's pid on another
  machine cannot be checked, and a host name is no proof of identity there;
* a full disk is SQLSTATE 53100 (``DiskFullError``), mapped to ``StorageFull``
  as SQLite's SQLITE_FULL is;
* migrations (``schema.py``) run under an advisory lock, so nodes starting
  together apply each version once; ``sona_schema`` records them.

The webhook outbox's delivery methods are ``postgres_outbox.py``."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import asyncpg

from sona.errors import IdempotencyConflict, InvalidTransition, NotFound, StorageFull
from sona.jobs import FINISHED, TRANSITIONS, Job, NewJob, Segment, Status
from sona.store import Claim, DeadOwner, Lease, Recovery, schema, sql
from sona.store.postgres_outbox import OutboxMixin, pg, write_outbox
from sona.store.rows import (
    job_from_row,
    new_job_values,
    segment_from_row,
    segment_values,
    text_from_rows,
)
from sona.store.sql import POSTGRES, render

# Any constant will do, as long as every Sona node uses the same one; it is
# scoped to the database, so schemas in one database migrate one at a time.
MIGRATION_LOCK = 0x5_0_4A

# Workers racing for the queue: a row another worker is claiming right now is
# passed over (SKIP LOCKED), not waited for. Priority, then a loaded model,
# then age. Segments, chunks_done and progress stay: the run resumes after them.
_CLAIM = """WITH pick AS (
        SELECT id FROM jobs WHERE status = 'queued' AND priority >= :floor{bigint}
        ORDER BY priority DESC, coalesce(model = ANY(:models::text[]), false) DESC,
                 created_at, seq
        LIMIT 1 FOR UPDATE SKIP LOCKED)
    UPDATE jobs SET status = 'processing', attempts = attempts + 1,
       lease_token = :token, lease_expires_at = {now} + :lease_s, worker_id = :worker_id,
       started_at = {now}, error_code = NULL, error_message = NULL
    FROM pick WHERE jobs.id = pick.id AND jobs.status = 'queued'
    RETURNING jobs.*"""

# Lapsed leases only: the owner may run on another machine.
_RECOVER = (
    sql.REQUEUE
    + """ WHERE {to_queued} AND status = 'processing'
    AND coalesce(lease_expires_at, 0) < {now} RETURNING id"""
)


async def migrate(db: asyncpg.Connection) -> None:
    """Within the caller's transaction: bring the schema up to the newest version."""
    await db.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
    await db.execute("CREATE TABLE IF NOT EXISTS sona_schema (version INTEGER NOT NULL)")
    version = await db.fetchval("SELECT max(version) FROM sona_schema") or 0
    for migration in schema.pending(version):
        for stmt in migration.statements(POSTGRES):
            await db.execute(stmt)
        await db.execute("INSERT INTO sona_schema (version) VALUES ($1)", migration.version)


async def _with_text(db: Any, job: Job) -> Job:
    """``job`` with its text: stored once it finished, built before."""
    if job.text or not job.segments_done:
        return job
    return replace(job, text=await _text(db, job.id))


async def _text(db: Any, job_id: str) -> str:
    return text_from_rows(await db.fetch(*pg(sql.SEGMENT_TEXTS, job_id=job_id)))


class PostgresStore(OutboxMixin):
    """``JobStore`` on a PostgreSQL database shared by every node (the webhook
    outbox: ``postgres_outbox.py``)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, url: str, *, max_size: int = 8) -> PostgresStore:
        """``url`` is a libpq URL; unknown query parameters (``?search_path=x``)
        become server settings, which is how a deployment picks its schema."""
        pool = await asyncpg.create_pool(url, min_size=1, max_size=max_size)
        store = cls(pool)
        try:
            await store._migrate()
        except BaseException:
            await pool.close()
            raise
        return store

    async def _migrate(self) -> None:
        async with self._tx() as db:
            await migrate(db)

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[asyncpg.Connection]:
        """One transaction. A full disk anywhere in it (a statement or the
        COMMIT) is ``StorageFull``: 507 at submit, a retry in the worker."""
        try:
            async with self._pool.acquire() as db, db.transaction():
                yield db
        except asyncpg.DiskFullError as exc:
            raise StorageFull("the disk is full: the database cannot be written") from exc

    async def _get(self, db: Any, job_id: str) -> Job:
        row = await db.fetchrow(*pg(sql.GET_JOB, id=job_id))
        if row is None:
            raise NotFound(f"no job with id {job_id!r}", param="job_id")
        return job_from_row(row)

    async def create(self, new: NewJob) -> tuple[Job, bool]:
        values = new_job_values(new)
        async with self._tx() as db:
            source = await db.fetchval(*pg(sql.SAME_RESULT, **values)) if new.dedupe else None
            if source is not None:
                row = await db.fetchrow(*pg(sql.COPY_RESULT, **values, source=source))
                if row is not None:
                    await db.execute(*pg(sql.COPY_SEGMENTS, id=new.id, source=source))
                    await write_outbox(db, new.id)  # born finished: its webhook goes out
            else:
                row = await db.fetchrow(*pg(sql.INSERT_JOB, **values))
            if row is not None:
                return job_from_row(row), True
            # Nothing inserted: the id or the idempotency key names a job already
            # (ON CONFLICT: two API nodes creating the same id at once both end here).
            for col, value, query in (
                ("id", new.id, sql.GET_JOB),
                ("idempotency_key", new.idempotency_key, sql.JOB_BY_KEY),
            ):
                if value is None:
                    continue
                row = await db.fetchrow(*pg(query, **{col: value}))
                if row is None:
                    continue
                if row["file_sha256"] != new.file_sha256:
                    raise IdempotencyConflict(
                        f"{col} {value!r} already names a job with a different file", param=col
                    )
                return job_from_row(row), False
            raise InvalidTransition(f"job {new.id} conflicts with a job that vanished")

    async def get(self, job_id: str) -> Job:
        async with self._pool.acquire() as db:
            return await _with_text(db, await self._get(db, job_id))

    async def list_jobs(
        self, *, status: Status | None, limit: int, before: str | None
    ) -> tuple[list[Job], bool]:
        query = sql.list_jobs(status=status is not None, before=before is not None)
        value = status.value if status is not None else None
        async with self._pool.acquire() as db:
            rows = await db.fetch(*pg(query, status=value, before=before, limit=limit + 1))
            jobs = [await _with_text(db, job_from_row(r)) for r in rows[:limit]]
        return jobs, len(rows) > limit

    async def segments(self, job_id: str, *, after: int = -1) -> list[Segment]:
        async with self._pool.acquire() as db:
            rows = await db.fetch(*pg(sql.SEGMENTS_AFTER, job_id=job_id, after=after))
        return [segment_from_row(r) for r in rows]

    async def queue_size(self) -> int:
        async with self._pool.acquire() as db:
            return int(await db.fetchval(*pg(sql.QUEUE_SIZE)))

    async def queue_ahead(self, job: Job) -> tuple[int, float]:
        async with self._pool.acquire() as db:
            row = await db.fetchrow(
                *pg(sql.QUEUE_AHEAD, priority=job.priority, created_at=job.created_at, id=job.id)
            )
            return int(row[0]), float(row[1])

    async def claim(
        self,
        *,
        worker_id: str,
        prefer_models: list[str],
        lease_s: float,
        min_priority: int | None = None,
    ) -> Claim | None:
        token = uuid.uuid4().hex
        floor = -(2**62) if min_priority is None else min_priority
        async with self._tx() as db:
            row = await db.fetchrow(
                *pg(
                    _CLAIM,
                    floor=floor,
                    models=prefer_models,
                    token=token,
                    lease_s=float(lease_s),
                    worker_id=worker_id,
                )
            )
            return None if row is None else Claim(job_from_row(row), token)

    async def _lease(self, db: Any, claim: Claim) -> Lease:
        row = await db.fetchrow(*pg(sql.LEASE, id=claim.job.id, token=claim.token))
        if row is None:
            return Lease.LOST
        return Lease.CANCEL_REQUESTED if row["cancel_requested"] else Lease.HELD

    async def heartbeat(self, claim: Claim, lease_s: float) -> Lease:
        async with self._tx() as db:
            await db.execute(
                *pg(sql.HEARTBEAT, id=claim.job.id, token=claim.token, lease_s=float(lease_s))
            )
            return await self._lease(db, claim)

    async def set_info(
        self,
        claim: Claim,
        *,
        duration: float,
        language: str | None,
        warnings: list[str] | None = None,
        language_probability: float | None = None,
    ) -> None:
        async with self._tx() as db:
            await db.execute(
                *pg(
                    sql.SET_INFO,
                    id=claim.job.id,
                    token=claim.token,
                    duration=duration,
                    language=language,
                    language_probability=language_probability,
                    warnings=json.dumps(warnings or []),
                )
            )

    async def add_chunks(
        self,
        claim: Claim,
        *,
        first: int,
        count: int,
        segments: list[Segment],
        processed_seconds: float,
    ) -> Lease:
        job_id = claim.job.id
        async with self._tx() as db:
            lease = await self._lease(db, claim)
            if lease is Lease.LOST:
                return lease
            moved = await db.fetchrow(
                *pg(
                    sql.ADVANCE_CHUNKS,
                    id=job_id,
                    token=claim.token,
                    count=count,
                    processed_seconds=float(processed_seconds),
                    first=first,
                )
            )
            if moved is None:
                raise InvalidTransition(f"job {job_id}: chunk {first} is not the next one")
            put = render(sql.PUT_SEGMENT, POSTGRES)
            await db.executemany(put.text, [put.args(segment_values(job_id, s)) for s in segments])
            # The text is not rewritten here: that would cost the whole
            # transcript per chunk. ``finish`` stores it; reads build it till then.
            await db.execute(*pg(sql.COUNT_SEGMENTS, id=job_id, added=len(segments)))
            return lease

    async def finish(
        self,
        claim: Claim,
        status: Status,
        *,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> Job:
        if status not in TRANSITIONS[Status.PROCESSING]:
            raise InvalidTransition(f"a processing job cannot become {status}")
        job_id = claim.job.id
        async with self._tx() as db:
            row = await db.fetchrow(
                *pg(
                    sql.FINISH,
                    id=job_id,
                    token=claim.token,
                    status=status.value,
                    error_code=error_code,
                    error_message=error_message,
                )
            )
            if row is None:
                raise InvalidTransition(f"job {job_id} is no longer held by this worker")
            if status in FINISHED:
                text = await _text(db, job_id)
                row = await db.fetchrow(*pg(sql.SET_TEXT, id=job_id, text=text))
            await write_outbox(db, job_id)
            return job_from_row(row)

    async def cancel(self, job_id: str) -> Job:
        async with self._tx() as db:
            row = await db.fetchrow(*pg(sql.GET_JOB_LOCKED, id=job_id))
            if row is None:
                raise NotFound(f"no job with id {job_id!r}", param="job_id")
            job = job_from_row(row)
            if job.status == Status.CANCELLED:
                return job
            if job.status == Status.QUEUED:
                row = await db.fetchrow(*pg(sql.CANCEL_QUEUED, id=job_id))
                if row is not None:
                    await write_outbox(db, job_id)
            elif job.status == Status.PROCESSING:
                row = await db.fetchrow(*pg(sql.REQUEST_CANCEL, id=job_id))
            else:
                raise InvalidTransition(f"job {job_id} is already {job.status}")
            if row is None:
                raise InvalidTransition(f"job {job_id} cannot be cancelled now")
            return job_from_row(row)

    async def engine_crashed(self, claim: Claim) -> Job:
        async with self._tx() as db:
            row = await db.fetchrow(*pg(sql.ENGINE_CRASHED, id=claim.job.id, token=claim.token))
            if row is None:
                raise InvalidTransition(f"job {claim.job.id} is no longer held by this worker")
            await write_outbox(db, claim.job.id)  # a row only when it failed for good
            return job_from_row(row)

    async def recover(self, *, is_dead: DeadOwner) -> Recovery:
        """Only leases tell liveness here (``is_dead`` is not consulted): the
        owner may run on another machine. A stalled worker that wakes later is
        fenced off by its token."""
        async with self._tx() as db:
            rows = await db.fetch(*pg(_RECOVER))
        return Recovery(sorted(r["id"] for r in rows))

    async def finished_before(self, ts: float) -> list[Job]:
        async with self._pool.acquire() as db:
            rows = await db.fetch(*pg(sql.FINISHED_BEFORE, ts=ts))
        return [job_from_row(r) for r in rows]

    async def delete(self, job_id: str) -> None:
        async with self._tx() as db:
            await db.execute(*pg(sql.DELETE_JOB, id=job_id))

    async def file_paths(self) -> set[str]:
        async with self._pool.acquire() as db:
            rows = await db.fetch(*pg(sql.FILE_PATHS))
        return {r[0] for r in rows}

    async def close(self) -> None:
        await self._pool.close()
