"""The webhook outbox of the PostgreSQL store (E1, E2): the row written with
every terminal status, and the delivery methods of the ``JobStore`` contract.
The statements both stores share are ``sql.py``'s; what is this store's own:

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
from sona.store import AttemptOutcome, Delivery, DeliveryClaim, DeliveryState, sql
from sona.store.rows import delivery_from_rows, new_delivery_id
from sona.store.sql import POSTGRES, render

if TYPE_CHECKING:
    from sona.jobs import Job

# Due, pending and not leased (or its lease ran out), oldest due first. SKIP
# LOCKED: rows another dispatcher is claiming now are left to it. Each row gets
# its own fresh token.
_CLAIM = """UPDATE webhook_deliveries
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


def pg(template: str, **values: Any) -> tuple[Any, ...]:
    """``template`` for asyncpg: its text, then its values in ``$n`` order."""
    query = render(template, POSTGRES)
    return (query.text, *query.args(values))


async def write_outbox(db: asyncpg.Connection, job_id: str) -> None:
    """Within the transaction that ended the job: its webhook delivery."""
    await db.execute(*pg(sql.OUTBOX, delivery_id=new_delivery_id(), job_id=job_id))


async def _with_attempts(db: asyncpg.Connection, rows: list[Any]) -> list[Delivery]:
    attempts: dict[str, list[Any]] = {r["id"]: [] for r in rows}
    for a in await db.fetch(*pg(_ATTEMPTS, ids=list(attempts))):
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
            rows = await db.fetch(*pg(_CLAIM, limit=limit, lease_s=float(lease_s)))
            rows.sort(key=lambda r: (r["next_attempt_at"], r["id"]))  # RETURNING has no order
            deliveries = await _with_attempts(db, rows)
        return [DeliveryClaim(d, r["lease_token"]) for d, r in zip(deliveries, rows, strict=True)]

    async def record_attempt(self, claim: DeliveryClaim, outcome: AttemptOutcome) -> Delivery:
        d, a = claim.delivery, outcome.attempt
        async with self._tx() as db:
            row = await db.fetchrow(
                *pg(
                    sql.RECORD_ATTEMPT,
                    id=d.id,
                    token=claim.token,
                    state=outcome.state.value,
                    next_attempt_at=outcome.next_attempt_at,
                )
            )
            if row is None:
                raise InvalidTransition(f"delivery {d.id} is no longer held by this dispatcher")
            await db.execute(
                *pg(
                    sql.ADD_ATTEMPT,
                    id=d.id,
                    number=a.number,
                    at=a.at,
                    status_code=a.status_code,
                    error=a.error,
                    duration_s=a.duration_s,
                )
            )
            if outcome.state is DeliveryState.DISABLED:
                await db.execute(*pg(sql.DISABLE_URL, job_id=d.job_id, url=d.url))
            [delivery] = await _with_attempts(db, [row])
            return delivery

    async def deliveries(self, job_id: str) -> list[Delivery]:
        async with self._snapshot() as db:
            await self._get(db, job_id)
            rows = await db.fetch(*pg(sql.DELIVERIES_OF, job_id=job_id))
            return await _with_attempts(db, rows)

    async def next_delivery_at(self) -> float | None:
        async with self._pool.acquire() as db:
            due: float | None = await db.fetchval(*pg(sql.NEXT_DELIVERY_AT))
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
