"""SQLite job store (aiosqlite, WAL). The embedded default.

One connection, one lock: aiosqlite runs statements on its own thread in
order, but a transaction spanning several awaits would otherwise interleave
with other coroutines' statements on the same connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiosqlite

from sona.errors import IdempotencyConflict, InvalidTransition, NotFound, StorageFull
from sona.jobs import FINISHED, TRANSITIONS, Job, NewJob, Segment, Status
from sona.store import Claim, DeadOwner, Lease, Recovery, schema, sql
from sona.store.rows import (
    job_from_row,
    new_job_values,
    segment_from_row,
    segment_values,
    text_from_rows,
)
from sona.store.sql import SQLITE, render
from sona.store.sqlite_outbox import OutboxMixin


def _bound(template: str, values: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
    """``template``'s text for SQLite and its values in order. Its clock is
    this process's: ``:now`` binds ``time.time()`` unless given."""
    query = render(template, SQLITE)
    if "now" in query.names and "now" not in values:
        values = {**values, "now": time.time()}
    return query.text, query.args(values)


class SqliteStore(OutboxMixin):
    """``JobStore`` on one SQLite file (the webhook outbox: ``sqlite_outbox.py``)."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str) -> SqliteStore:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA journal_mode=WAL")
        # FULL: the commit that acknowledges a job must survive power loss, which
        # NORMAL does not promise in WAL mode.
        await db.execute("PRAGMA synchronous=FULL")
        await db.execute("PRAGMA foreign_keys=ON")
        await db.execute("PRAGMA busy_timeout=10000")
        store = cls(db)
        await store._migrate()
        return store

    async def _migrate(self) -> None:
        """The migrations above ``PRAGMA user_version`` (``schema.py``), in one
        transaction: BEGIN IMMEDIATE keeps a second process out meanwhile."""
        async with self._tx():
            version = (await self._one("PRAGMA user_version"))[0]
            for migration in schema.pending(version):
                for stmt in migration.statements(SQLITE):
                    await self._db.execute(stmt)
                await self._db.execute(f"PRAGMA user_version = {migration.version:d}")

    def _tx(self) -> _Transaction:
        return _Transaction(self._db, self._lock)

    async def _one(self, template: str, **values: Any) -> Any:
        async with self._db.execute(*_bound(template, values)) as cur:
            return await cur.fetchone()

    async def _all(self, template: str, **values: Any) -> list[Any]:
        async with self._db.execute(*_bound(template, values)) as cur:
            return list(await cur.fetchall())

    async def _run(self, template: str, **values: Any) -> None:
        async with self._db.execute(*_bound(template, values)):
            pass

    async def _get(self, job_id: str) -> Job:
        row = await self._one(sql.GET_JOB, id=job_id)
        if row is None:
            raise NotFound(f"no job with id {job_id!r}", param="job_id")
        return job_from_row(row)

    async def _text(self, job_id: str) -> str:
        return text_from_rows(await self._all(sql.SEGMENT_TEXTS, job_id=job_id))

    async def _with_text(self, job: Job) -> Job:
        """``job`` with its text: stored once it finished, built before."""
        if job.text or not job.segments_done:
            return job
        return replace(job, text=await self._text(job.id))

    async def create(self, new: NewJob) -> tuple[Job, bool]:
        async with self._tx():
            for col, value, query in (
                ("id", new.id, sql.GET_JOB),
                ("idempotency_key", new.idempotency_key, sql.JOB_BY_KEY),
            ):
                if value is None:
                    continue
                row = await self._one(query, **{col: value})
                if row is None:
                    continue
                if row["file_sha256"] != new.file_sha256:
                    raise IdempotencyConflict(
                        f"{col} {value!r} already names a job with a different file", param=col
                    )
                return job_from_row(row), False
            values = new_job_values(new)
            if new.dedupe and (source := await self._one(sql.SAME_RESULT, **values)):
                row = await self._one(sql.COPY_RESULT, **values, source=source["id"])
                await self._run(sql.COPY_SEGMENTS, id=new.id, source=source["id"])
                await self._outbox(new.id)  # born finished: its webhook goes out like any other
            else:
                row = await self._one(sql.INSERT_JOB, **values)
            return job_from_row(row), True

    async def get(self, job_id: str) -> Job:
        async with self._lock:
            return await self._with_text(await self._get(job_id))

    async def list_jobs(
        self, *, status: Status | None, limit: int, before: str | None
    ) -> tuple[list[Job], bool]:
        query = sql.list_jobs(status=status is not None, before=before is not None)
        value = status.value if status is not None else None
        async with self._lock:
            rows = await self._all(query, status=value, before=before, limit=limit + 1)
            jobs = [await self._with_text(job_from_row(r)) for r in rows[:limit]]
        return jobs, len(rows) > limit

    async def segments(self, job_id: str, *, after: int = -1) -> list[Segment]:
        async with self._lock:
            rows = await self._all(sql.SEGMENTS_AFTER, job_id=job_id, after=after)
        return [segment_from_row(r) for r in rows]

    async def queue_size(self) -> int:
        async with self._lock:
            return int((await self._one(sql.QUEUE_SIZE))[0])

    async def queue_ahead(self, job: Job) -> tuple[int, float]:
        async with self._lock:
            row = await self._one(
                sql.QUEUE_AHEAD, priority=job.priority, created_at=job.created_at, id=job.id
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
        marks = ",".join("?" * len(prefer_models)) or "NULL"
        now = time.time()
        floor = -(2**62) if min_priority is None else min_priority
        async with self._tx():
            # The best queued job: priority, then a loaded model, then age.
            async with self._db.execute(
                f"""SELECT id FROM jobs WHERE status = 'queued' AND priority >= ?
                    ORDER BY priority DESC, (model IN ({marks})) DESC, created_at, rowid
                    LIMIT 1""",
                (floor, *prefer_models),
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                return None
            # Segments, chunks_done and progress stay: the run resumes after them.
            await self._db.execute(
                """UPDATE jobs SET status = 'processing', attempts = attempts + 1,
                   lease_token = ?, lease_expires_at = ?, worker_id = ?, started_at = ?,
                   error_code = NULL, error_message = NULL
                   WHERE id = ? AND status = 'queued'""",
                (token, now + lease_s, worker_id, now, row["id"]),
            )
            return Claim(await self._get(row["id"]), token)

    async def _lease(self, claim: Claim) -> Lease:
        row = await self._one(sql.LEASE, id=claim.job.id, token=claim.token)
        if row is None:
            return Lease.LOST
        return Lease.CANCEL_REQUESTED if row["cancel_requested"] else Lease.HELD

    async def heartbeat(self, claim: Claim, lease_s: float) -> Lease:
        async with self._tx():
            await self._run(sql.HEARTBEAT, id=claim.job.id, token=claim.token, lease_s=lease_s)
            return await self._lease(claim)

    async def set_info(
        self,
        claim: Claim,
        *,
        duration: float,
        language: str | None,
        warnings: list[str] | None = None,
        language_probability: float | None = None,
    ) -> None:
        async with self._tx():
            await self._run(
                sql.SET_INFO,
                id=claim.job.id,
                token=claim.token,
                duration=duration,
                language=language,
                language_probability=language_probability,
                warnings=json.dumps(warnings or []),
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
        async with self._tx():
            lease = await self._lease(claim)
            if lease is Lease.LOST:
                return lease
            moved = await self._one(
                sql.ADVANCE_CHUNKS,
                id=job_id,
                token=claim.token,
                count=count,
                processed_seconds=processed_seconds,
                first=first,
            )
            if moved is None:
                raise InvalidTransition(f"job {job_id}: chunk {first} is not the next one")
            put = render(sql.PUT_SEGMENT, SQLITE)
            await self._db.executemany(
                put.text, [put.args(segment_values(job_id, s)) for s in segments]
            )
            # The text is not rewritten here: that would cost the whole
            # transcript per chunk. ``finish`` stores it; reads build it till then.
            await self._run(sql.COUNT_SEGMENTS, id=job_id, added=len(segments))
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
        async with self._tx():
            row = await self._one(
                sql.FINISH,
                id=job_id,
                token=claim.token,
                status=status.value,
                error_code=error_code,
                error_message=error_message,
            )
            if row is None:
                raise InvalidTransition(f"job {job_id} is no longer held by this worker")
            if status in FINISHED:
                row = await self._one(sql.SET_TEXT, id=job_id, text=await self._text(job_id))
            await self._outbox(job_id)
            return job_from_row(row)

    async def cancel(self, job_id: str) -> Job:
        async with self._tx():
            row = await self._one(sql.GET_JOB_LOCKED, id=job_id)
            if row is None:
                raise NotFound(f"no job with id {job_id!r}", param="job_id")
            job = job_from_row(row)
            if job.status == Status.CANCELLED:
                return job
            if job.status == Status.QUEUED:
                row = await self._one(sql.CANCEL_QUEUED, id=job_id)
                if row is not None:
                    await self._outbox(job_id)
            elif job.status == Status.PROCESSING:
                row = await self._one(sql.REQUEST_CANCEL, id=job_id)
            else:
                raise InvalidTransition(f"job {job_id} is already {job.status}")
            if row is None:
                raise InvalidTransition(f"job {job_id} cannot be cancelled now")
            return job_from_row(row)

    async def engine_crashed(self, claim: Claim) -> Job:
        async with self._tx():
            row = await self._one(sql.ENGINE_CRASHED, id=claim.job.id, token=claim.token)
            if row is None:
                raise InvalidTransition(f"job {claim.job.id} is no longer held by this worker")
            await self._outbox(claim.job.id)  # a row only when it failed for good
            return job_from_row(row)

    async def recover(self, *, is_dead: DeadOwner) -> Recovery:
        """A lapsed lease, or an owner that is no longer alive on this host
        (one file: every worker runs here)."""
        requeued: list[str] = []
        now = time.time()
        async with self._tx():
            rows = await self._all(
                "SELECT id, lease_expires_at, worker_id FROM jobs WHERE status = 'processing'"
            )
            for r in rows:
                if (r["lease_expires_at"] or 0) < now or is_dead(r["worker_id"] or ""):
                    row = await self._one(
                        sql.REQUEUE + " WHERE id = :id AND {to_queued} RETURNING id", id=r["id"]
                    )
                    if row is None:
                        raise InvalidTransition(f"job {r['id']} cannot become queued")
                    requeued.append(r["id"])
        return Recovery(requeued)

    async def finished_before(self, ts: float) -> list[Job]:
        async with self._lock:
            rows = await self._all(sql.FINISHED_BEFORE, ts=ts)
        return [job_from_row(r) for r in rows]

    async def delete(self, job_id: str) -> None:
        async with self._tx():
            await self._run(sql.DELETE_JOB, id=job_id)

    async def file_paths(self) -> set[str]:
        async with self._lock:
            rows = await self._all(sql.FILE_PATHS)
        return {r[0] for r in rows}

    async def close(self) -> None:
        await self._db.close()


def _is_full(exc: BaseException) -> bool:
    """SQLITE_FULL (13, extended codes keep it in the low byte): the disk (or its
    quota) has no room for the write."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and (code & 0xFF) == 13


class _Transaction:
    """``async with``: take the store lock, BEGIN IMMEDIATE, COMMIT or ROLLBACK.

    IMMEDIATE takes the write lock up front, so two processes sharing the file
    never deadlock upgrading a read transaction. A failed COMMIT is rolled back
    (else the connection stays inside the transaction and every later BEGIN
    fails: a full disk would outlast the free space). A full disk anywhere in
    the transaction is ``StorageFull``: 507 at submit, a retry in the worker."""

    def __init__(self, db: aiosqlite.Connection, lock: asyncio.Lock) -> None:
        self._db, self._lock = db, lock

    async def __aenter__(self) -> None:
        await self._lock.acquire()
        try:
            await self._db.execute("BEGIN IMMEDIATE")
        except BaseException as exc:
            # Cancelled while waiting, the BEGIN may still run on aiosqlite's
            # thread: undo it (the queue keeps the order) before the next user.
            with contextlib.suppress(sqlite3.Error, ValueError):
                await asyncio.shield(self._db.execute("ROLLBACK"))
            self._lock.release()
            if _is_full(exc):
                raise StorageFull("the disk is full: the database cannot be written") from exc
            raise

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                try:
                    await self._db.execute("COMMIT")
                    return
                except BaseException as failed:
                    exc = failed
                    with contextlib.suppress(sqlite3.Error, ValueError):
                        await self._db.execute("ROLLBACK")
                    if not _is_full(failed):
                        raise
            else:
                with contextlib.suppress(sqlite3.Error, ValueError):
                    await self._db.execute("ROLLBACK")
            if _is_full(exc):
                raise StorageFull("the disk is full: the database cannot be written") from exc
        finally:
            self._lock.release()
