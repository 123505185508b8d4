"""PostgreSQL job store (asyncpg): many workers on many machines share it.

The store's body is ``sqlstore.py``'s, the same statements as SQLite's
(``sql.py``); what differs is here:

* claims take the row with ``FOR UPDATE SKIP LOCKED``, so workers (and webhook
  dispatchers) racing for the queue never wait on each other nor take the same
  row;
* every timestamp comes from the database's clock, so leases mean the same on
  machines whose clocks disagree. The ``next_attempt_at`` of a webhook retry is
  the dispatcher's (its clock), which moves a retry by at most the skew;
* ``recover`` judges liveness by lease expiry only: a worker's pid on another
  machine cannot be checked, and a host name is no proof of identity there;
* a full disk is SQLSTATE 53100 (``DiskFullError``), mapped to ``StorageFull``
  as SQLite's SQLITE_FULL is;
* migrations (``schema.py``) run under an advisory lock, so nodes starting
  together apply each version once; ``sona_schema`` records them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from sona.errors import StorageFull
from sona.store import Claim, DeadOwner, Delivery, DeliveryClaim, Recovery, schema, sql
from sona.store.rows import delivery_from_rows, job_from_row
from sona.store.search import postgres_search
from sona.store.sql import POSTGRES, render
from sona.store.sqlstore import Conn, SqlStore
from sona.textsearch import Cursor, Query, SearchFilters, SearchHit

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

# Due, pending and not leased (or its lease ran out), oldest due first; rows
# another dispatcher is claiming now are left to it. Each gets its own token.
_CLAIM_DELIVERIES = """UPDATE webhook_deliveries
    SET lease_token = replace(gen_random_uuid()::text, '-', ''),
        lease_expires_at = {now} + :lease_s
    WHERE id IN (
        SELECT id FROM webhook_deliveries
        WHERE state = 'pending' AND next_attempt_at <= {now}
          AND (lease_expires_at IS NULL OR lease_expires_at < {now})
        ORDER BY next_attempt_at, id LIMIT :limit
        FOR UPDATE SKIP LOCKED)
    RETURNING *"""

# The attempts of many deliveries in one round trip.
_ATTEMPTS = """SELECT * FROM webhook_attempts WHERE delivery_id = ANY(:ids::text[])
    ORDER BY delivery_id, number"""


def _pg(template: str, values: dict[str, Any]) -> tuple[Any, ...]:
    """``template`` for asyncpg: its text, then its values in ``$n`` order."""
    query = render(template, POSTGRES)
    return (query.text, *query.args(values))


class _Conn:
    """``sqlstore.Conn`` on one pooled connection."""

    def __init__(self, db: asyncpg.Connection) -> None:
        self.db = db

    async def one(self, template: str, **values: Any) -> Any:
        return await self.db.fetchrow(*_pg(template, values))

    async def all(self, template: str, **values: Any) -> list[Any]:
        return list(await self.db.fetch(*_pg(template, values)))

    async def run(self, template: str, **values: Any) -> None:
        await self.db.execute(*_pg(template, values))

    async def many(self, template: str, rows: list[dict[str, Any]]) -> None:
        query = render(template, POSTGRES)
        await self.db.executemany(query.text, [query.args(r) for r in rows])


async def migrate(db: asyncpg.Connection) -> None:
    """Within the caller's transaction: bring the schema up to the newest version."""
    await db.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
    await db.execute("CREATE TABLE IF NOT EXISTS sona_schema (version INTEGER NOT NULL)")
    version = await db.fetchval("SELECT max(version) FROM sona_schema") or 0
    for migration in schema.pending(version):
        for stmt in migration.statements(POSTGRES):
            await db.execute(stmt)
        await db.execute("INSERT INTO sona_schema (version) VALUES ($1)", migration.version)


class PostgresStore(SqlStore):
    """``JobStore`` on a PostgreSQL database shared by every node."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, url: str, *, max_size: int = 8) -> PostgresStore:
        """``url`` is a libpq URL; unknown query parameters (``?search_path=x``)
        become server settings, which is how a deployment picks its schema."""
        pool = await asyncpg.create_pool(url, min_size=1, max_size=max_size)
        store = cls(pool)
        try:
            async with store._tx() as c:
                await migrate(c.db)
        except BaseException:
            await pool.close()
            raise
        return store

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[_Conn]:
        """One transaction. A full disk anywhere in it (a statement or the
        COMMIT) is ``StorageFull``: 507 at submit, a retry in the worker."""
        try:
            async with self._pool.acquire() as db, db.transaction():
                yield _Conn(db)
        except asyncpg.DiskFullError as exc:
            raise StorageFull("the disk is full: the database cannot be written") from exc

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[_Conn]:
        async with self._pool.acquire() as db:
            yield _Conn(db)

    @asynccontextmanager
    async def _snapshot(self) -> AsyncIterator[_Conn]:
        """A read-only transaction on one snapshot: deliveries and their
        attempts as they were together."""
        async with (
            self._pool.acquire() as db,
            db.transaction(isolation="repeatable_read", readonly=True),
        ):
            yield _Conn(db)

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
        async with self._tx() as c:
            row = await c.one(
                _CLAIM,
                floor=floor,
                models=prefer_models,
                token=token,
                lease_s=float(lease_s),
                worker_id=worker_id,
            )
            return None if row is None else Claim(job_from_row(row), token)

    async def recover(self, *, is_dead: DeadOwner) -> Recovery:
        """Only leases tell liveness here (``is_dead`` is not consulted): the
        owner may run on another machine. A stalled worker that wakes later is
        fenced off by its token."""
        async with self._tx() as c:
            rows = await c.all(_RECOVER)
        return Recovery(sorted(r["id"] for r in rows))

    async def claim_deliveries(self, *, limit: int, lease_s: float) -> list[DeliveryClaim]:
        async with self._tx() as c:
            rows = await c.all(_CLAIM_DELIVERIES, limit=limit, lease_s=float(lease_s))
            rows.sort(key=lambda r: (r["next_attempt_at"], r["id"]))  # RETURNING has no order
            deliveries = await self._with_attempts(c, rows)
        return [DeliveryClaim(d, r["lease_token"]) for d, r in zip(deliveries, rows, strict=True)]

    async def _with_attempts(self, c: Conn, rows: list[Any]) -> list[Delivery]:
        attempts: dict[str, list[Any]] = {r["id"]: [] for r in rows}
        for a in await c.all(_ATTEMPTS, ids=list(attempts)):
            attempts[a["delivery_id"]].append(a)
        return [delivery_from_rows(r, attempts[r["id"]]) for r in rows]

    async def search(
        self, query: Query, filters: SearchFilters, *, limit: int, after: Cursor | None
    ) -> tuple[list[SearchHit], bool]:
        async with self._pool.acquire() as db:
            return await postgres_search(db, query, filters, limit=limit, after=after)

    async def close(self) -> None:
        await self._pool.close()
