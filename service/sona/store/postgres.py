"""PostgreSQL job store (asyncpg): many workers on many machines share it.

The same contract and the same SQL shape as ``store/sqlite.py``; what differs:

* claims take the row with ``FOR UPDATE SKIP LOCKED``, so workers racing for
  the queue never wait on each other nor take the same job;
* every timestamp comes from the database's clock, so leases mean the same on
  machines whose clocks disagree;
* ``recover`` judges liveness by lease expiry only: a worker's pid on another
  machine cannot be checked, and a host name is no proof of identity there;
* a full disk is SQLSTATE 53100 (``DiskFullError``), mapped to ``StorageFull``
  as SQLite's SQLITE_FULL is;
* migrations run under an advisory lock, so nodes starting together apply
  each version once (``postgres_schema.py``: the tables, version by version).

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
from sona.jobs import FINISHED, TRANSITIONS, Job, NewJob, Segment, Status, sources_of
from sona.store import Claim, DeadOwner, Lease, Recovery
from sona.store.postgres_outbox import OutboxMixin, write_outbox
from sona.store.postgres_schema import NOW, migrate
from sona.store.rows import (
    TEXT_COLUMNS,
    job_from_row,
    new_job_values,
    segment_data,
    segment_from_row,
    text_from_rows,
)
from sona.store.search import postgres_search
from sona.textsearch import Cursor, Query, SearchFilters, SearchHit
from sona.wire import FINISHED_SQL

_FENCE = "id = $1 AND lease_token = $2 AND status = 'processing'"
# Stream order: as stored. The transcript's order is formats.in_order's.
_SEGMENTS = "SELECT * FROM segments WHERE job_id = $1 AND idx > $2 ORDER BY idx"
_TEXTS = f"SELECT {TEXT_COLUMNS} FROM segments WHERE job_id = $1"


async def _with_text(db: Any, job: Job) -> Job:
    """``job`` with its text: stored once it finished, built before."""
    if job.text or not job.segments_done:
        return job
    return replace(job, text=text_from_rows(await db.fetch(_TEXTS, job.id)))


def _status_guard(target: Status) -> str:
    """``status IN (...)`` of the statuses ``target`` may be reached from."""
    return "status IN (" + ",".join(f"'{s.value}'" for s in sources_of(target)) + ")"


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
        row = await db.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
        if row is None:
            raise NotFound(f"no job with id {job_id!r}", param="job_id")
        return job_from_row(row)

    async def create(self, new: NewJob) -> tuple[Job, bool]:
        async with self._tx() as db:
            source = await self._same_result(db, new) if new.dedupe else None
            if source is not None:
                row = await self._copy_result(db, new, source)
            else:
                row = await self._insert(db, new)
            if row is not None:
                return job_from_row(row), True
            # Nothing inserted: the id or the idempotency key names a job already
            # (ON CONFLICT: two API nodes creating the same id at once both end here).
            for col, value in (("id", new.id), ("idempotency_key", new.idempotency_key)):
                if value is None:
                    continue
                row = await db.fetchrow(f"SELECT * FROM jobs WHERE {col} = $1", value)
                if row is None:
                    continue
                if row["file_sha256"] != new.file_sha256:
                    raise IdempotencyConflict(
                        f"{col} {value!r} already names a job with a different file", param=col
                    )
                return job_from_row(row), False
            raise InvalidTransition(f"job {new.id} conflicts with a job that vanished")

    async def _insert(self, db: Any, new: NewJob) -> Any:
        """The queued job's row, or None when its id or key is taken."""
        return await db.fetchrow(
            f"""INSERT INTO jobs (id, status, priority, model, options, file_path,
               file_name, file_sha256, file_size, idempotency_key, callback_url,
               metadata, duration, max_attempts, created_at)
               VALUES ($1, 'queued', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                       {NOW})
               ON CONFLICT DO NOTHING RETURNING *""",
            *new_job_values(new),
        )

    async def _same_result(self, db: Any, new: NewJob) -> str | None:
        """The newest completed job with ``new``'s file hash and options. FOR
        SHARE: retention cannot delete it before the copy is made."""
        return await db.fetchval(
            """SELECT id FROM jobs WHERE file_sha256 = $1 AND status = 'completed'
               AND options = $2 ORDER BY finished_at DESC LIMIT 1 FOR SHARE""",
            new.file_sha256,
            new.options.model_dump_json(),
        )

    async def _copy_result(self, db: Any, new: NewJob, source: str) -> Any:
        """A new job, completed at once with ``source``'s transcript: its own id,
        key, metadata and upload, the same segments, ``cached`` set. None when
        its id or key is taken."""
        row = await db.fetchrow(
            f"""INSERT INTO jobs (id, status, priority, model, options, file_path,
               file_name, file_sha256, file_size, idempotency_key, callback_url, metadata,
               duration, processed_seconds, segments_done, chunks_done, text, language,
               language_probability, warnings, max_attempts, created_at, started_at,
               finished_at, cached)
               SELECT $1, 'completed', $2, model, options, $3, $4, file_sha256,
               file_size, $5, $6, $7, duration, processed_seconds, segments_done,
               chunks_done, text, language, language_probability, warnings, $8,
               clock.now, clock.now, clock.now, 1
               FROM jobs CROSS JOIN (SELECT {NOW} AS now) AS clock WHERE id = $9
               ON CONFLICT DO NOTHING RETURNING *""",
            new.id,
            new.priority,
            new.file_path,  # its own copy: retention of one never takes the other's
            new.file_name,
            new.idempotency_key,
            new.callback_url,
            json.dumps(new.metadata) if new.metadata is not None else None,
            new.max_attempts,
            source,
        )
        if row is None:
            return None
        await db.execute(
            """INSERT INTO segments (job_id, idx, start, "end", text, speaker, data)
               SELECT $1, idx, start, "end", text, speaker, data FROM segments
               WHERE job_id = $2""",
            new.id,
            source,
        )
        await write_outbox(db, new.id)  # born finished: its webhook goes out like any other
        return row

    async def get(self, job_id: str) -> Job:
        async with self._pool.acquire() as db:
            return await _with_text(db, await self._get(db, job_id))

    async def list_jobs(
        self, *, status: Status | None, limit: int, before: str | None
    ) -> tuple[list[Job], bool]:
        where: list[str] = ["true"]
        args: list[Any] = []
        if status is not None:
            args.append(status.value)
            where.append(f"status = ${len(args)}")
        if before is not None:
            args.append(before)
            where.append(f"seq < (SELECT seq FROM jobs WHERE id = ${len(args)})")
        args.append(limit + 1)
        sql = f"SELECT * FROM jobs WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ${len(args)}"
        async with self._pool.acquire() as db:
            rows = await db.fetch(sql, *args)
            jobs = [await _with_text(db, job_from_row(r)) for r in rows[:limit]]
        return jobs, len(rows) > limit

    async def segments(self, job_id: str, *, after: int = -1) -> list[Segment]:
        async with self._pool.acquire() as db:
            rows = await db.fetch(_SEGMENTS, job_id, after)
        return [segment_from_row(r) for r in rows]

    async def search(
        self, query: Query, filters: SearchFilters, *, limit: int, after: Cursor | None
    ) -> tuple[list[SearchHit], bool]:
        async with self._pool.acquire() as db:
            return await postgres_search(db, query, filters, limit=limit, after=after)

    async def queue_size(self) -> int:
        async with self._pool.acquire() as db:
            return int(await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'queued'"))

    async def queue_ahead(self, job: Job) -> tuple[int, float]:
        # Queued jobs a claim takes before this one: higher priority, or as urgent
        # and older (the loaded-model preference is left out: an estimate).
        async with self._pool.acquire() as db:
            row = await db.fetchrow(
                """SELECT count(*), coalesce(sum(duration), 0) FROM jobs
                   WHERE status = 'queued' AND (priority > $1::bigint OR (priority = $1::bigint
                       AND (created_at < $2 OR (created_at = $2 AND id < $3))))""",
                job.priority,
                job.created_at,
                job.id,
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
            # SKIP LOCKED: a row another worker is claiming right now is passed
            # over, not waited for. Segments, chunks_done and progress stay: the
            # run resumes after them.
            row = await db.fetchrow(
                f"""WITH pick AS (
                        SELECT id FROM jobs WHERE status = 'queued' AND priority >= $1::bigint
                        ORDER BY priority DESC, coalesce(model = ANY($2::text[]), false) DESC,
                                 created_at, seq
                        LIMIT 1 FOR UPDATE SKIP LOCKED)
                    UPDATE jobs SET status = 'processing', attempts = attempts + 1,
                       lease_token = $3, lease_expires_at = {NOW} + $4, worker_id = $5,
                       started_at = {NOW}, error_code = NULL, error_message = NULL
                    FROM pick WHERE jobs.id = pick.id AND jobs.status = 'queued'
                    RETURNING jobs.*""",
                floor,
                prefer_models,
                token,
                float(lease_s),
                worker_id,
            )
            return None if row is None else Claim(job_from_row(row), token)

    async def _lease(self, db: Any, claim: Claim) -> Lease:
        # FOR UPDATE: the row stays as read until the caller's transaction ends.
        row = await db.fetchrow(
            f"SELECT cancel_requested FROM jobs WHERE {_FENCE} FOR UPDATE",
            claim.job.id,
            claim.token,
        )
        if row is None:
            return Lease.LOST
        return Lease.CANCEL_REQUESTED if row["cancel_requested"] else Lease.HELD

    async def heartbeat(self, claim: Claim, lease_s: float) -> Lease:
        async with self._tx() as db:
            await db.execute(
                f"UPDATE jobs SET lease_expires_at = {NOW} + $3 WHERE {_FENCE}",
                claim.job.id,
                claim.token,
                float(lease_s),
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
                "UPDATE jobs SET duration = $3, language = $4, warnings = $5, "
                f"language_probability = $6 WHERE {_FENCE}",
                claim.job.id,
                claim.token,
                duration,
                language,
                json.dumps(warnings or []),
                language_probability,
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
        async with self._tx() as db:
            lease = await self._lease(db, claim)
            if lease is Lease.LOST:
                return lease
            done = await db.execute(
                f"""UPDATE jobs SET chunks_done = chunks_done + $3,
                    processed_seconds = greatest(processed_seconds, $4)
                    WHERE {_FENCE} AND chunks_done = $5""",
                claim.job.id,
                claim.token,
                count,
                float(processed_seconds),
                first,
            )
            if done != "UPDATE 1":
                raise InvalidTransition(f"job {claim.job.id}: chunk {first} is not the next one")
            await db.executemany(
                """INSERT INTO segments (job_id, idx, start, "end", text, speaker, data)
                   VALUES ($1, $2, $3, $4, $5, $6, $7)
                   ON CONFLICT (job_id, idx) DO UPDATE SET start = excluded.start,
                   "end" = excluded."end", text = excluded.text, speaker = excluded.speaker,
                   data = excluded.data""",
                [
                    (claim.job.id, s.index, s.start, s.end, s.text, s.speaker, segment_data(s))
                    for s in segments
                ],
            )
            # The text is not rewritten here: that would cost the whole
            # transcript per chunk. ``finish`` stores it; reads build it till then.
            await db.execute(
                "UPDATE jobs SET segments_done = segments_done + $2 WHERE id = $1",
                claim.job.id,
                len(segments),
            )
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
        finished = "NULL"
        if status in FINISHED:
            finished = NOW
        async with self._tx() as db:
            row = await db.fetchrow(
                f"""UPDATE jobs SET status = $3, error_code = $4, error_message = $5,
                    finished_at = {finished}, lease_token = NULL, lease_expires_at = NULL,
                    cancel_requested = 0,
                    -- a drain requeue is no failed attempt
                    attempts = attempts - CASE WHEN $3 = 'queued' THEN 1 ELSE 0 END,
                    started_at = CASE WHEN $3 = 'queued' THEN NULL ELSE started_at END,
                    processed_seconds = CASE WHEN $3 = 'completed'
                        THEN coalesce(duration, processed_seconds) ELSE processed_seconds END
                    WHERE {_FENCE} RETURNING *""",
                claim.job.id,
                claim.token,
                status.value,
                error_code,
                error_message,
            )
            if row is None:
                raise InvalidTransition(f"job {claim.job.id} is no longer held by this worker")
            if status in FINISHED:
                row = await db.fetchrow(
                    "UPDATE jobs SET text = $2 WHERE id = $1 RETURNING *",
                    claim.job.id,
                    text_from_rows(await db.fetch(_TEXTS, claim.job.id)),
                )
            await write_outbox(db, claim.job.id)
            return job_from_row(row)

    async def cancel(self, job_id: str) -> Job:
        async with self._tx() as db:
            row = await db.fetchrow("SELECT * FROM jobs WHERE id = $1 FOR UPDATE", job_id)
            if row is None:
                raise NotFound(f"no job with id {job_id!r}", param="job_id")
            job = job_from_row(row)
            if job.status == Status.CANCELLED:
                return job
            if job.status == Status.QUEUED:
                row = await db.fetchrow(
                    f"""UPDATE jobs SET status = 'cancelled', finished_at = {NOW}
                        WHERE id = $1 AND {_status_guard(Status.CANCELLED)} RETURNING *""",
                    job_id,
                )
                if row is not None:
                    await write_outbox(db, job_id)
            elif job.status == Status.PROCESSING:
                row = await db.fetchrow(
                    """UPDATE jobs SET cancel_requested = 1
                       WHERE id = $1 AND status = 'processing' RETURNING *""",
                    job_id,
                )
            else:
                raise InvalidTransition(f"job {job_id} is already {job.status}")
            if row is None:
                raise InvalidTransition(f"job {job_id} cannot be cancelled now")
            return job_from_row(row)

    async def engine_crashed(self, claim: Claim) -> Job:
        async with self._tx() as db:
            row = await db.fetchrow(
                f"""UPDATE jobs SET crashes = crashes + 1, lease_token = NULL,
                    lease_expires_at = NULL, cancel_requested = 0,
                    status = CASE WHEN crashes + 1 >= max_attempts THEN 'failed' ELSE 'queued' END,
                    error_code = CASE WHEN crashes + 1 >= max_attempts
                        THEN 'worker_crashed' END,
                    error_message = CASE WHEN crashes + 1 >= max_attempts
                        THEN 'the engine process died while running this job '
                             || (crashes + 1) || ' times; the file may crash the decoder' END,
                    finished_at = CASE WHEN crashes + 1 >= max_attempts THEN {NOW} END,
                    started_at = CASE WHEN crashes + 1 >= max_attempts THEN started_at END
                    WHERE {_FENCE} RETURNING *""",
                claim.job.id,
                claim.token,
            )
            if row is None:
                raise InvalidTransition(f"job {claim.job.id} is no longer held by this worker")
            await write_outbox(db, claim.job.id)  # a row only when it failed for good
            return job_from_row(row)

    async def recover(self, *, is_dead: DeadOwner) -> Recovery:
        """Only leases tell liveness here (``is_dead`` is not consulted): the
        owner may run on another machine. A stalled worker that wakes later is
        fenced off by its token."""
        async with self._tx() as db:
            rows = await db.fetch(
                f"""UPDATE jobs SET status = 'queued', lease_token = NULL,
                    lease_expires_at = NULL, cancel_requested = 0, started_at = NULL
                    WHERE {_status_guard(Status.QUEUED)} AND status = 'processing'
                    AND coalesce(lease_expires_at, 0) < {NOW}
                    RETURNING id"""
            )
        return Recovery(sorted(r["id"] for r in rows))

    async def finished_before(self, ts: float) -> list[Job]:
        async with self._pool.acquire() as db:
            rows = await db.fetch(
                f"SELECT * FROM jobs WHERE status IN {FINISHED_SQL} AND finished_at < $1",
                ts,
            )
        return [job_from_row(r) for r in rows]

    async def delete(self, job_id: str) -> None:
        async with self._tx() as db:
            await db.execute("DELETE FROM jobs WHERE id = $1", job_id)

    async def file_paths(self) -> set[str]:
        async with self._pool.acquire() as db:
            rows = await db.fetch("SELECT file_path FROM jobs")
        return {r[0] for r in rows}

    async def close(self) -> None:
        await self._pool.close()
