"""The webhook outbox of the PostgreSQL store (E1, E2): the row written with
every terminal status, and the delivery methods of the ``JobStore`` contract
(the tables: migration 3 in ``postgres_schema.py``). The twin of ``sqlite_outbox.py``; what differs:

* ``claim_deliveries`` is one ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP
  LOCKED) RETURNING``: dispatchers on every node poll the same table, and a row
  one of them is claiming is passed over by the others, never waited for nor
  taken twice;
* due times and leases read the database's clock, as the job leases do. The
  ``next_attempt_at`` of a retry is the dispatcher's (its clock), which moves a
  retry by at most the skew between that node and the database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

import asyncpg

from sona.errors import InvalidTransition
from sona.store import AttemptOutcome, Delivery, DeliveryClaim, DeliveryState
from sona.store.postgres_schema import NOW
from sona.store.rows import delivery_from_rows
from sona.wire import FINISHED_SQL

if TYPE_CHECKING:
    from sona.jobs import Job

# The outbox row of a job that has just ended (no row without a callback_url):
# a fresh id, due at once. One clock reading serves both times.
_OUTBOX = f"""INSERT INTO webhook_deliveries (id, job_id, event, url, state, created_at,
    next_attempt_at)
    SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), id, 'job.' || status,
           callback_url, 'pending', clock.now, clock.now
    FROM jobs CROSS JOIN (SELECT {NOW} AS now) AS clock
    WHERE id = $1 AND callback_url IS NOT NULL
      AND status IN {FINISHED_SQL}"""

# Due, pending and not leased (or its lease ran out), oldest due first. SKIP
# LOCKED: rows another dispatcher is claiming now are left to it. Each row gets
# its own fresh token.
_CLAIM = f"""UPDATE webhook_deliveries
    SET lease_token = replace(gen_random_uuid()::text, '-', ''),
        lease_expires_at = {NOW} + $2
    WHERE id IN (
        SELECT id FROM webhook_deliveries
        WHERE state = 'pending' AND next_attempt_at <= {NOW}
          AND (lease_expires_at IS NULL OR lease_expires_at < {NOW})
        ORDER BY next_attempt_at, id LIMIT $1
        FOR UPDATE SKIP LOCKED)
    RETURNING *"""

_ATTEMPTS = """SELECT * FROM webhook_attempts WHERE delivery_id = ANY($1::text[])
    ORDER BY delivery_id, number"""


async def write_outbox(db: asyncpg.Connection, job_id: str) -> None:
    """Within the transaction that ended the job: its webhook delivery."""
    await db.execute(_OUTBOX, job_id)


async def _with_attempts(db: asyncpg.Connection, rows: list[Any]) -> list[Delivery]:
    attempts: dict[str, list[Any]] = {r["id"]: [] for r in rows}
    for a in await db.fetch(_ATTEMPTS, list(attempts)):
        attempts[a["delivery_id"]].append(a)
    return [delivery_from_rows(r, attempts[r["id"]]) for r in rows]


class OutboxMixin:
    """The delivery methods of ``PostgresStore``; its pool and transaction
    helper are theirs."""

    _pool: asyncpg.Pool

    if TYPE_CHECKING:

        def _tx(self) -> AbstractAsyncContextManager[asyncpg.Connection]: ...
        async def _get(self, db: Any, job_id: str) -> Job: ...

    async def claim_deliveries(self, *, limit: int, lease_s: float) -> list[DeliveryClaim]:
        async with self._tx() as db:
            rows = await db.fetch(_CLAIM, limit, float(lease_s))
            rows.sort(key=lambda r: (r["next_attempt_at"], r["id"]))  # RETURNING has no order
            deliveries = await _with_attempts(db, rows)
        return [DeliveryClaim(d, r["lease_token"]) for d, r in zip(deliveries, rows, strict=True)]

    async def record_attempt(self, claim: DeliveryClaim, outcome: AttemptOutcome) -> Delivery:
        d, a = claim.delivery, outcome.attempt
        async with self._tx() as db:
            row = await db.fetchrow(
                """UPDATE webhook_deliveries SET state = $3, next_attempt_at = $4,
                   lease_token = NULL, lease_expires_at = NULL
                   WHERE id = $1 AND lease_token = $2 AND state = 'pending' RETURNING *""",
                d.id,
                claim.token,
                outcome.state.value,
                outcome.next_attempt_at,
            )
            if row is None:
                raise InvalidTransition(f"delivery {d.id} is no longer held by this dispatcher")
            await db.execute(
                """INSERT INTO webhook_attempts (delivery_id, number, at, status_code, error,
                   duration_s) VALUES ($1, $2, $3, $4, $5, $6)""",
                d.id,
                a.number,
                a.at,
                a.status_code,
                a.error,
                a.duration_s,
            )
            if outcome.state is DeliveryState.DISABLED:
                await db.execute(
                    """UPDATE webhook_deliveries SET state = 'disabled', next_attempt_at = NULL
                       WHERE job_id = $1 AND url = $2 AND state = 'pending'""",
                    d.job_id,
                    d.url,
                )
            [delivery] = await _with_attempts(db, [row])
            return delivery

    async def deliveries(self, job_id: str) -> list[Delivery]:
        async with self._snapshot() as db:
            await self._get(db, job_id)
            rows = await db.fetch(
                "SELECT * FROM webhook_deliveries WHERE job_id = $1 ORDER BY created_at, id",
                job_id,
            )
            return await _with_attempts(db, rows)

    async def next_delivery_at(self) -> float | None:
        async with self._pool.acquire() as db:
            # A leased delivery is claimable again when its lease ends (as in SQLite).
            due: float | None = await db.fetchval(
                "SELECT min(GREATEST(next_attempt_at, lease_expires_at)) "
                "FROM webhook_deliveries WHERE state = 'pending'"
            )
        return due

    @asynccontextmanager
    async def _snapshot(self) -> AsyncIterator[asyncpg.Connection]:
        """A read-only transaction on one snapshot: deliveries and their
        attempts as they were together."""
        async with (
            self._pool.acquire() as db,
            db.transaction(isolation="repeatable_read", readonly=True),
        ):
            yield db
