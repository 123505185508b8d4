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
from sona.jobs import (
    FINISHED,
    TRANSITIONS,
    Job,
    NewJob,
    Segment,
    Status,
    sources_of,
)
from sona.store import Claim, DeadOwner, Lease, Recovery
from sona.store.rows import (
    TEXT_COLUMNS,
    job_from_row,
    new_job_values,
    segment_data,
    segment_from_row,
    text_from_rows,
)
from sona.store.search import SQLITE_MIGRATION, SqliteReader
from sona.store.sqlite_outbox import MIGRATION_3, OutboxMixin
from sona.textsearch import Cursor, Query, SearchFilters, SearchHit
from sona.wire import FINISHED_SQL

SCHEMA = [
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0,
        model TEXT,
        options TEXT NOT NULL,
        file_path TEXT NOT NULL,
        file_name TEXT NOT NULL,
        file_sha256 TEXT NOT NULL,
        file_size INTEGER NOT NULL,
        idempotency_key TEXT UNIQUE,
        callback_url TEXT,
        metadata TEXT,
        duration REAL,
        processed_seconds REAL NOT NULL DEFAULT 0,
        segments_done INTEGER NOT NULL DEFAULT 0,
        text TEXT NOT NULL DEFAULT '',
        language TEXT,
        error_code TEXT,
        error_message TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        lease_token TEXT,
        lease_expires_at REAL,
        worker_id TEXT
    )""",
    "CREATE INDEX jobs_queue ON jobs (status, priority DESC, created_at)",
    """
    CREATE TABLE segments (
        job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        start REAL NOT NULL,
        "end" REAL NOT NULL,
        text TEXT NOT NULL,
        speaker TEXT,
        data TEXT NOT NULL,
        PRIMARY KEY (job_id, idx)
    )""",
]

# Version 2: engine crashes counted apart from runs; stored chunks for resume.
MIGRATION_2 = [
    "ALTER TABLE jobs ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE jobs ADD COLUMN chunks_done INTEGER NOT NULL DEFAULT 0",
]

# Version 3 is the webhook outbox (built on another branch). Version 4: warnings
# a finished job carries (audio_truncated), and answers copied from an earlier
# job with the same file and options (A11 dedupe). Each step checks its own
# column, so the order the two branches land in does not matter.
MIGRATION_4 = [
    "ALTER TABLE jobs ADD COLUMN warnings TEXT NOT NULL DEFAULT '[]'",
    "ALTER TABLE jobs ADD COLUMN cached INTEGER NOT NULL DEFAULT 0",
    "CREATE INDEX jobs_dedupe ON jobs (file_sha256, status)",
]

# Version 5: the probability of a detected language (None when it was asked for).
MIGRATION_5 = ["ALTER TABLE jobs ADD COLUMN language_probability REAL"]

_FENCE = "id = ? AND lease_token = ? AND status = 'processing'"
# Stream order: as stored. The transcript's order is formats.in_order's.
_SEGMENTS = "SELECT * FROM segments WHERE job_id = ? AND idx > ? ORDER BY idx"
_TEXTS = f"SELECT {TEXT_COLUMNS} FROM segments WHERE job_id = ?"
# Queued jobs a claim takes before this one: higher priority, or as urgent and
# older (the loaded-model preference is left out: an estimate).
_AHEAD = """status = 'queued' AND (priority > ? OR (priority = ? AND
    (created_at < ? OR (created_at = ? AND id < ?))))"""


class SqliteStore(OutboxMixin):
    """``JobStore`` on one SQLite file (the webhook outbox: ``sqlite_outbox.py``)."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._lock = asyncio.Lock()
        self._reader: SqliteReader | None = None  # set by open()

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
        # A segment's REPLACE must fire its delete trigger (store/search.py).
        await db.execute("PRAGMA recursive_triggers=ON")
        store = cls(db)
        await store._migrate()
        store._reader = SqliteReader(path)
        return store

    async def _migrate(self) -> None:
        async with self._tx():
            version = (await self._one("PRAGMA user_version"))[0]
            if version < 1:
                for stmt in SCHEMA:
                    await self._db.execute(stmt)
            if version < 2:
                for stmt in MIGRATION_2:
                    await self._db.execute(stmt)
                await self._db.execute("PRAGMA user_version = 2")
            if version < 3:
                for stmt in MIGRATION_3:
                    await self._db.execute(stmt)
                await self._db.execute("PRAGMA user_version = 3")
            columns = {r[1] for r in await self._all("PRAGMA table_info(jobs)")}
            if "warnings" not in columns:
                for stmt in MIGRATION_4:
                    await self._db.execute(stmt)
                await self._db.execute("PRAGMA user_version = 4")
            if "language_probability" not in columns:
                for stmt in MIGRATION_5:
                    await self._db.execute(stmt)
                await self._db.execute("PRAGMA user_version = 5")
            if await self._one("SELECT 1 FROM sqlite_master WHERE name = 'segments_fts'") is None:
                for stmt in SQLITE_MIGRATION:
                    await self._db.execute(stmt)
                await self._db.execute("PRAGMA user_version = 6")

    def _tx(self) -> _Transaction:
        return _Transaction(self._db, self._lock)

    async def _one(self, sql: str, *args: Any) -> Any:
        async with self._db.execute(sql, args) as cur:
            return await cur.fetchone()

    async def _all(self, sql: str, *args: Any) -> list[Any]:
        async with self._db.execute(sql, args) as cur:
            return list(await cur.fetchall())

    async def _get(self, job_id: str) -> Job:
        row = await self._one("SELECT * FROM jobs WHERE id = ?", job_id)
        if row is None:
            raise NotFound(f"no job with id {job_id!r}", param="job_id")
        return job_from_row(row)

    async def _text(self, job_id: str) -> str:
        return text_from_rows(await self._all(_TEXTS, job_id))

    async def _with_text(self, job: Job) -> Job:
        """``job`` with its text: stored once it finished, built before."""
        if job.text or not job.segments_done:
            return job
        return replace(job, text=await self._text(job.id))

    async def create(self, new: NewJob) -> tuple[Job, bool]:
        async with self._tx():
            for col, value in (("id", new.id), ("idempotency_key", new.idempotency_key)):
                if value is None:
                    continue
                row = await self._one(f"SELECT * FROM jobs WHERE {col} = ?", value)
                if row is None:
                    continue
                if row["file_sha256"] != new.file_sha256:
                    raise IdempotencyConflict(
                        f"{col} {value!r} already names a job with a different file", param=col
                    )
                return job_from_row(row), False
            if new.dedupe and (source := await self._same_result(new)) is not None:
                return await self._copy_result(new, source), True
            await self._db.execute(
                """INSERT INTO jobs (id, status, priority, model, options, file_path,
                   file_name, file_sha256, file_size, idempotency_key, callback_url,
                   metadata, duration, max_attempts, created_at)
                   VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (*new_job_values(new), time.time()),
            )
            return await self._get(new.id), True

    async def _same_result(self, new: NewJob) -> Job | None:
        """The newest completed job with the same file and options (A11)."""
        row = await self._one(
            """SELECT * FROM jobs WHERE file_sha256 = ? AND status = 'completed'
               AND options = ? ORDER BY finished_at DESC LIMIT 1""",
            new.file_sha256,
            new.options.model_dump_json(),
        )
        return job_from_row(row) if row is not None else None

    async def _copy_result(self, new: NewJob, source: Job) -> Job:
        """A new job, completed at once with ``source``'s transcript: its own id,
        key and metadata, the same segments, ``cached`` set."""
        now = time.time()
        await self._db.execute(
            """INSERT INTO jobs (id, status, priority, model, options, file_path,
               file_name, file_sha256, file_size, idempotency_key, callback_url, metadata,
               duration, processed_seconds, segments_done, chunks_done, text, language,
               language_probability, warnings, max_attempts, created_at, started_at,
               finished_at, cached)
               SELECT ?, 'completed', ?, model, options, ?, ?, file_sha256,
               file_size, ?, ?, ?, duration, processed_seconds, segments_done, chunks_done,
               text, language, language_probability, warnings, ?, ?, ?, ?, 1
               FROM jobs WHERE id = ?""",
            (
                new.id,
                new.priority,
                new.file_path,  # its own copy: retention of one never takes the other's
                new.file_name,
                new.idempotency_key,
                new.callback_url,
                json.dumps(new.metadata) if new.metadata is not None else None,
                new.max_attempts,
                now,
                now,
                now,
                source.id,
            ),
        )
        await self._db.execute(
            """INSERT INTO segments (job_id, idx, start, "end", text, speaker, data)
               SELECT ?, idx, start, "end", text, speaker, data FROM segments WHERE job_id = ?""",
            (new.id, source.id),
        )
        await self._outbox(new.id)  # born finished: its webhook goes out like any other
        return await self._get(new.id)

    async def get(self, job_id: str) -> Job:
        async with self._lock:
            return await self._with_text(await self._get(job_id))

    async def list_jobs(
        self, *, status: Status | None, limit: int, before: str | None
    ) -> tuple[list[Job], bool]:
        where, args = ["1=1"], []
        if status is not None:
            where.append("status = ?")
            args.append(status.value)
        if before is not None:
            where.append("rowid < (SELECT rowid FROM jobs WHERE id = ?)")
            args.append(before)
        sql = f"SELECT * FROM jobs WHERE {' AND '.join(where)} ORDER BY rowid DESC LIMIT ?"
        async with self._lock:
            rows = await self._all(sql, *args, limit + 1)
            jobs = [await self._with_text(job_from_row(r)) for r in rows[:limit]]
        return jobs, len(rows) > limit

    async def segments(self, job_id: str, *, after: int = -1) -> list[Segment]:
        async with self._lock:
            rows = await self._all(_SEGMENTS, job_id, after)
        return [segment_from_row(r) for r in rows]

    async def search(
        self, query: Query, filters: SearchFilters, *, limit: int, after: Cursor | None
    ) -> tuple[list[SearchHit], bool]:
        if self._reader is None:
            raise RuntimeError("a SqliteStore made without open() has no search connection")
        return await self._reader.search(query, filters, limit=limit, after=after)

    async def queue_size(self) -> int:
        async with self._lock:
            return (await self._one("SELECT count(*) FROM jobs WHERE status = 'queued'"))[0]

    async def queue_ahead(self, job: Job) -> tuple[int, float]:
        async with self._lock:
            row = await self._one(
                f"SELECT count(*), coalesce(sum(duration), 0) FROM jobs WHERE {_AHEAD}",
                job.priority,
                job.priority,
                job.created_at,
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
        marks = ",".join("?" * len(prefer_models)) or "NULL"
        now = time.time()
        floor = -(2**62) if min_priority is None else min_priority
        async with self._tx():
            row = await self._one(
                f"""SELECT id FROM jobs WHERE status = 'queued' AND priority >= ?
                    ORDER BY priority DESC, (model IN ({marks})) DESC, created_at, rowid
                    LIMIT 1""",
                floor,
                *prefer_models,
            )
            if row is None:
                return None
            job_id = row["id"]
            # Segments, chunks_done and progress stay: the run resumes after them.
            await self._db.execute(
                """UPDATE jobs SET status = 'processing', attempts = attempts + 1,
                   lease_token = ?, lease_expires_at = ?, worker_id = ?, started_at = ?,
                   error_code = NULL, error_message = NULL
                   WHERE id = ? AND status = 'queued'""",
                (token, now + lease_s, worker_id, now, job_id),
            )
            return Claim(await self._get(job_id), token)

    async def _lease(self, claim: Claim) -> Lease:
        row = await self._one(
            f"SELECT cancel_requested FROM jobs WHERE {_FENCE}", claim.job.id, claim.token
        )
        if row is None:
            return Lease.LOST
        return Lease.CANCEL_REQUESTED if row["cancel_requested"] else Lease.HELD

    async def heartbeat(self, claim: Claim, lease_s: float) -> Lease:
        async with self._tx():
            await self._db.execute(
                f"UPDATE jobs SET lease_expires_at = ? WHERE {_FENCE}",
                (time.time() + lease_s, claim.job.id, claim.token),
            )
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
            await self._db.execute(
                "UPDATE jobs SET duration = ?, language = ?, language_probability = ?, "
                f"warnings = ? WHERE {_FENCE}",
                (
                    duration,
                    language,
                    language_probability,
                    json.dumps(warnings or []),
                    claim.job.id,
                    claim.token,
                ),
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
        async with self._tx():
            lease = await self._lease(claim)
            if lease is Lease.LOST:
                return lease
            cur = await self._db.execute(
                f"""UPDATE jobs SET chunks_done = chunks_done + ?,
                    processed_seconds = max(processed_seconds, ?)
                    WHERE {_FENCE} AND chunks_done = ?""",
                (count, processed_seconds, claim.job.id, claim.token, first),
            )
            if cur.rowcount != 1:
                raise InvalidTransition(f"job {claim.job.id}: chunk {first} is not the next one")
            await self._db.executemany(
                """INSERT OR REPLACE INTO segments (job_id, idx, start, "end", text, speaker, data)
                   VALUES (?, ?, ?, ?, ?, ?, ?)""",
                [
                    (claim.job.id, s.index, s.start, s.end, s.text, s.speaker, segment_data(s))
                    for s in segments
                ],
            )
            # The text is not rewritten here: that would cost the whole
            # transcript per chunk. ``finish`` stores it; reads build it till then.
            await self._db.execute(
                "UPDATE jobs SET segments_done = segments_done + ? WHERE id = ?",
                (len(segments), claim.job.id),
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
        async with self._tx():
            finished_at = time.time() if status in FINISHED else None
            cur = await self._db.execute(
                f"""UPDATE jobs SET status = ?, error_code = ?, error_message = ?,
                    finished_at = ?, lease_token = NULL, lease_expires_at = NULL,
                    cancel_requested = 0,
                    -- a drain requeue is no failed attempt
                    attempts = attempts - (? = 'queued'),
                    started_at = CASE WHEN ? = 'queued' THEN NULL ELSE started_at END,
                    processed_seconds = CASE WHEN ? = 'completed'
                        THEN coalesce(duration, processed_seconds) ELSE processed_seconds END
                    WHERE {_FENCE}""",
                (
                    status.value,
                    error_code,
                    error_message,
                    finished_at,
                    status.value,
                    status.value,
                    status.value,
                    claim.job.id,
                    claim.token,
                ),
            )
            if cur.rowcount != 1:
                raise InvalidTransition(f"job {claim.job.id} is no longer held by this worker")
            if status in FINISHED:
                text = await self._text(claim.job.id)
                await self._db.execute(
                    "UPDATE jobs SET text = ? WHERE id = ?", (text, claim.job.id)
                )
            await self._outbox(claim.job.id)
            return await self._get(claim.job.id)

    async def cancel(self, job_id: str) -> Job:
        async with self._tx():
            job = await self._get(job_id)
            if job.status == Status.CANCELLED:
                return job
            if job.status == Status.QUEUED:
                await self._guarded(job_id, Status.CANCELLED, "finished_at = ?", time.time())
                await self._outbox(job_id)
            elif job.status == Status.PROCESSING:
                await self._db.execute(
                    "UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND status = 'processing'",
                    (job_id,),
                )
            else:
                raise InvalidTransition(f"job {job_id} is already {job.status}")
            return await self._get(job_id)

    async def _guarded(self, job_id: str, target: Status, sets: str, *args: Any) -> None:
        sources = sources_of(target)
        marks = ",".join("?" * len(sources))
        cur = await self._db.execute(
            f"UPDATE jobs SET status = ?, {sets} WHERE id = ? AND status IN ({marks})",
            (target.value, *args, job_id, *[s.value for s in sources]),
        )
        if cur.rowcount != 1:
            raise InvalidTransition(f"job {job_id} cannot become {target}")

    async def engine_crashed(self, claim: Claim) -> Job:
        async with self._tx():
            cur = await self._db.execute(
                f"""UPDATE jobs SET crashes = crashes + 1, lease_token = NULL,
                    lease_expires_at = NULL, cancel_requested = 0,
                    status = CASE WHEN crashes + 1 >= max_attempts THEN 'failed' ELSE 'queued' END,
                    error_code = CASE WHEN crashes + 1 >= max_attempts
                        THEN 'worker_crashed' END,
                    error_message = CASE WHEN crashes + 1 >= max_attempts
                        THEN 'the engine process died while running this job '
                             || (crashes + 1) || ' times; the file may crash the decoder' END,
                    finished_at = CASE WHEN crashes + 1 >= max_attempts THEN ? END,
                    started_at = CASE WHEN crashes + 1 >= max_attempts THEN started_at END
                    WHERE {_FENCE}""",
                (time.time(), claim.job.id, claim.token),
            )
            if cur.rowcount != 1:
                raise InvalidTransition(f"job {claim.job.id} is no longer held by this worker")
            await self._outbox(claim.job.id)  # a row only when it failed for good
            return await self._get(claim.job.id)

    async def recover(self, *, is_dead: DeadOwner) -> Recovery:
        requeued: list[str] = []
        now = time.time()
        async with self._tx():
            rows = await self._all(
                "SELECT id, lease_expires_at, worker_id FROM jobs WHERE status = 'processing'"
            )
            for r in rows:
                if (r["lease_expires_at"] or 0) < now or is_dead(r["worker_id"] or ""):
                    await self._guarded(
                        r["id"],
                        Status.QUEUED,
                        "lease_token = NULL, lease_expires_at = NULL, cancel_requested = 0, "
                        "started_at = NULL",
                    )
                    requeued.append(r["id"])
        return Recovery(requeued)

    async def finished_before(self, ts: float) -> list[Job]:
        async with self._lock:
            rows = await self._all(
                f"SELECT * FROM jobs WHERE status IN {FINISHED_SQL} AND finished_at < ?",
                ts,
            )
        return [job_from_row(r) for r in rows]

    async def delete(self, job_id: str) -> None:
        async with self._tx():
            await self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    async def file_paths(self) -> set[str]:
        async with self._lock:
            rows = await self._all("SELECT file_path FROM jobs")
        return {r[0] for r in rows}

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.close()
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
