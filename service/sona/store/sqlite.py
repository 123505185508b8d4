"""SQLite job store (aiosqlite, WAL). The embedded default.

One connection, one lock: aiosqlite runs statements on its own thread in
order, but a transaction spanning several awaits would otherwise interleave
with other coroutines' statements on the same connection. The store's body is
``sqlstore.py``'s; here are the connection, the clock (this process's:
``:now`` binds ``time.time()``), migrating by ``PRAGMA user_version``, and
what one process holding the whole file does simply: ``claim``, ``recover``
and delivery claims as a SELECT then an UPDATE."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite

from sona.errors import InvalidTransition, StorageFull
from sona.store import Claim, DeadOwner, DeliveryClaim, Recovery, schema, sql
from sona.store.search import SqliteReader
from sona.store.sql import SQLITE, render
from sona.store.sqlstore import SqlStore, job_of
from sona.textsearch import Cursor, Query, SearchFilters, SearchHit

# Due, pending and not leased (or its lease ran out), oldest due first.
_DUE = """SELECT id FROM webhook_deliveries
    WHERE state = 'pending' AND next_attempt_at <= :now
      AND (lease_expires_at IS NULL OR lease_expires_at < :now)
    ORDER BY next_attempt_at, id LIMIT :limit"""
_LEASE = """UPDATE webhook_deliveries SET lease_token = :token, lease_expires_at = :until
    WHERE id = :id RETURNING *"""


def _bound(template: str, values: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
    """``template``'s text for SQLite and its values in order; ``:now`` is
    ``time.time()`` unless given."""
    query = render(template, SQLITE)
    if "now" in query.names and "now" not in values:
        values = {**values, "now": time.time()}
    return query.text, query.args(values)


class _Conn:
    """``sqlstore.Conn`` on the store's one connection."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def one(self, template: str, **values: Any) -> Any:
        async with self._db.execute(*_bound(template, values)) as cur:
            return await cur.fetchone()

    async def all(self, template: str, **values: Any) -> list[Any]:
        async with self._db.execute(*_bound(template, values)) as cur:
            return list(await cur.fetchall())

    async def run(self, template: str, **values: Any) -> None:
        async with self._db.execute(*_bound(template, values)):
            pass

    async def many(self, template: str, rows: list[dict[str, Any]]) -> None:
        query = render(template, SQLITE)
        await self._db.executemany(query.text, [query.args(r) for r in rows])


class SqliteStore(SqlStore):
    """``JobStore`` on one SQLite file."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._lock = asyncio.Lock()
        self._conn = _Conn(db)
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
        store = cls(db)
        await store._migrate()
        store._reader = SqliteReader(path)
        return store

    async def _migrate(self) -> None:
        """The migrations above ``PRAGMA user_version`` (``schema.py``), in one
        transaction: BEGIN IMMEDIATE keeps a second process out meanwhile."""
        async with self._tx() as c:
            version = (await c.one("PRAGMA user_version"))[0]
            for migration in schema.pending(version):
                for stmt in migration.statements(SQLITE):
                    await self._db.execute(stmt)
                await self._db.execute(f"PRAGMA user_version = {migration.version:d}")

    def _tx(self) -> _Transaction:
        return _Transaction(self._db, self._lock, self._conn)

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[_Conn]:
        async with self._lock:
            yield self._conn

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
        async with self._tx() as c:
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
            return Claim(await job_of(c, row["id"]), token)

    async def recover(self, *, is_dead: DeadOwner) -> Recovery:
        """A lapsed lease, or an owner no longer alive on this host (one file:
        its workers all run here)."""
        requeued: list[str] = []
        now = time.time()
        async with self._tx() as c:
            rows = await c.all(
                "SELECT id, lease_expires_at, worker_id FROM jobs WHERE status = 'processing'"
            )
            for r in rows:
                if (r["lease_expires_at"] or 0) < now or is_dead(r["worker_id"] or ""):
                    row = await c.one(
                        sql.REQUEUE + " WHERE id = :id AND {to_queued} RETURNING id", id=r["id"]
                    )
                    if row is None:
                        raise InvalidTransition(f"job {r['id']} cannot become queued")
                    requeued.append(r["id"])
        return Recovery(requeued)

    async def claim_deliveries(self, *, limit: int, lease_s: float) -> list[DeliveryClaim]:
        now = time.time()
        async with self._tx() as c:
            claims = []
            for row in await c.all(_DUE, now=now, limit=limit):
                token = uuid.uuid4().hex
                leased = await c.one(_LEASE, token=token, until=now + lease_s, id=row["id"])
                [delivery] = await self._with_attempts(c, [leased])
                claims.append(DeliveryClaim(delivery, token))
            return claims

    async def search(
        self, query: Query, filters: SearchFilters, *, limit: int, after: Cursor | None
    ) -> tuple[list[SearchHit], bool]:
        """On its own read connection (WAL): a broad search never holds the
        store's lock over chunk writes and claims."""
        if self._reader is None:
            raise RuntimeError("a SqliteStore made without open() has no search connection")
        return await self._reader.search(query, filters, limit=limit, after=after)

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

    def __init__(self, db: aiosqlite.Connection, lock: asyncio.Lock, conn: _Conn) -> None:
        self._db, self._lock, self._conn = db, lock, conn

    async def __aenter__(self) -> _Conn:
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
        return self._conn

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
