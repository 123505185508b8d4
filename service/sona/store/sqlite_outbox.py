"""The webhook outbox of the SQLite store (E1, E2): the schema (migration 3),
the row written with every terminal status, and the delivery methods of the
``JobStore`` contract. Plain SQL; ``postgres_outbox.py`` is its PostgreSQL twin."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any

import aiosqlite

from sona.errors import InvalidTransition
from sona.store import AttemptOutcome, Delivery, DeliveryClaim, DeliveryState
from sona.store.rows import delivery_from_rows
from sona.wire import FINISHED_SQL

if TYPE_CHECKING:
    from sona.jobs import Job

# Version 3: the webhook outbox (E1, E2). A delivery row is written in the same
# transaction as its job's terminal status; each attempt is a row of its own.
MIGRATION_3 = [
    """
    CREATE TABLE webhook_deliveries (
        id TEXT PRIMARY KEY,
        job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        event TEXT NOT NULL,
        url TEXT NOT NULL,
        state TEXT NOT NULL,
        created_at REAL NOT NULL,
        next_attempt_at REAL,
        lease_token TEXT,
        lease_expires_at REAL
    )""",
    "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at)",
    "CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id)",
    """
    CREATE TABLE webhook_attempts (
        delivery_id TEXT NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
        number INTEGER NOT NULL,
        at REAL NOT NULL,
        status_code INTEGER,
        error TEXT,
        duration_s REAL NOT NULL,
        PRIMARY KEY (delivery_id, number)
    )""",
]
# The outbox row of a job that has just ended (no row without a callback_url).
_OUTBOX = f"""INSERT INTO webhook_deliveries (id, job_id, event, url, state, created_at,
    next_attempt_at)
    SELECT ?, id, 'job.' || status, callback_url, 'pending', ?, ? FROM jobs
    WHERE id = ? AND callback_url IS NOT NULL
      AND status IN {FINISHED_SQL}"""


class OutboxMixin:
    """The delivery methods of ``SqliteStore``; its connection, lock and
    transaction helper are theirs."""

    _db: aiosqlite.Connection
    _lock: asyncio.Lock

    if TYPE_CHECKING:

        def _tx(self) -> Any: ...
        async def _one(self, sql: str, *args: Any) -> Any: ...
        async def _all(self, sql: str, *args: Any) -> list[Any]: ...
        async def _get(self, job_id: str) -> Job: ...

    async def _outbox(self, job_id: str) -> None:
        """Within the transaction that ended the job: its webhook delivery."""
        now = time.time()
        await self._db.execute(_OUTBOX, (f"msg_{uuid.uuid4().hex}", now, now, job_id))

    # -- webhook deliveries --------------------------------------------------

    async def claim_deliveries(self, *, limit: int, lease_s: float) -> list[DeliveryClaim]:
        now = time.time()
        async with self._tx():
            rows = await self._all(
                """SELECT id FROM webhook_deliveries
                   WHERE state = 'pending' AND next_attempt_at <= ?
                     AND (lease_expires_at IS NULL OR lease_expires_at < ?)
                   ORDER BY next_attempt_at, id LIMIT ?""",
                now,
                now,
                limit,
            )
            claims = []
            for row in rows:
                token = uuid.uuid4().hex
                await self._db.execute(
                    "UPDATE webhook_deliveries SET lease_token = ?, lease_expires_at = ? "
                    "WHERE id = ?",
                    (token, now + lease_s, row["id"]),
                )
                claims.append(DeliveryClaim(await self._delivery(row["id"]), token))
            return claims

    async def record_attempt(self, claim: DeliveryClaim, outcome: AttemptOutcome) -> Delivery:
        d, a = claim.delivery, outcome.attempt
        async with self._tx():
            cur = await self._db.execute(
                """UPDATE webhook_deliveries SET state = ?, next_attempt_at = ?,
                   lease_token = NULL, lease_expires_at = NULL
                   WHERE id = ? AND lease_token = ? AND state = 'pending'""",
                (outcome.state.value, outcome.next_attempt_at, d.id, claim.token),
            )
            if cur.rowcount != 1:
                raise InvalidTransition(f"delivery {d.id} is no longer held by this dispatcher")
            await self._db.execute(
                """INSERT INTO webhook_attempts (delivery_id, number, at, status_code, error,
                   duration_s) VALUES (?, ?, ?, ?, ?, ?)""",
                (d.id, a.number, a.at, a.status_code, a.error, a.duration_s),
            )
            if outcome.state is DeliveryState.DISABLED:
                await self._db.execute(
                    """UPDATE webhook_deliveries SET state = 'disabled', next_attempt_at = NULL
                       WHERE job_id = ? AND url = ? AND state = 'pending'""",
                    (d.job_id, d.url),
                )
            return await self._delivery(d.id)

    async def deliveries(self, job_id: str) -> list[Delivery]:
        async with self._lock:
            await self._get(job_id)
            rows = await self._all(
                "SELECT id FROM webhook_deliveries WHERE job_id = ? ORDER BY created_at, id",
                job_id,
            )
            return [await self._delivery(r["id"]) for r in rows]

    async def next_delivery_at(self) -> float | None:
        async with self._lock:
            # A leased delivery (an attempt under way) is claimable again at
            # the earliest when its lease ends: not a reason to wake now.
            row = await self._one(
                "SELECT min(max(next_attempt_at, coalesce(lease_expires_at, 0))) "
                "FROM webhook_deliveries WHERE state = 'pending'"
            )
        return row[0]

    async def _delivery(self, delivery_id: str) -> Delivery:
        row = await self._one("SELECT * FROM webhook_deliveries WHERE id = ?", delivery_id)
        attempts = await self._all(
            "SELECT * FROM webhook_attempts WHERE delivery_id = ? ORDER BY number", delivery_id
        )
        return delivery_from_rows(row, attempts)
