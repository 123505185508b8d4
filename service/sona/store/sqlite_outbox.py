"""The webhook outbox of the SQLite store (E1, E2): the row written with every
terminal status, and the delivery methods of the ``JobStore`` contract. The
statements both stores share are ``sql.py``'s; the claim is this store's own:
one process's transaction holds the whole file, so a plain SELECT then UPDATE
cannot race another dispatcher."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any

import aiosqlite

from sona.errors import InvalidTransition
from sona.store import AttemptOutcome, Delivery, DeliveryClaim, DeliveryState, sql
from sona.store.rows import delivery_from_rows, new_delivery_id

if TYPE_CHECKING:
    from sona.jobs import Job

# Due, pending and not leased (or its lease ran out), oldest due first.
_DUE = """SELECT id FROM webhook_deliveries
    WHERE state = 'pending' AND next_attempt_at <= :now
      AND (lease_expires_at IS NULL OR lease_expires_at < :now)
    ORDER BY next_attempt_at, id LIMIT :limit"""
_LEASE = (
    "UPDATE webhook_deliveries SET lease_token = :token, lease_expires_at = :until WHERE id = :id"
)


class OutboxMixin:
    """The delivery methods of ``SqliteStore``; its connection, lock and
    statement helpers are theirs."""

    _db: aiosqlite.Connection
    _lock: asyncio.Lock

    if TYPE_CHECKING:

        def _tx(self) -> Any: ...
        async def _one(self, template: str, **values: Any) -> Any: ...
        async def _all(self, template: str, **values: Any) -> list[Any]: ...
        async def _run(self, template: str, **values: Any) -> None: ...
        async def _get(self, job_id: str) -> Job: ...

    async def _outbox(self, job_id: str) -> None:
        """Within the transaction that ended the job: its webhook delivery."""
        await self._run(sql.OUTBOX, delivery_id=new_delivery_id(), job_id=job_id)

    async def claim_deliveries(self, *, limit: int, lease_s: float) -> list[DeliveryClaim]:
        now = time.time()
        async with self._tx():
            rows = await self._all(_DUE, now=now, limit=limit)
            claims = []
            for row in rows:
                token = uuid.uuid4().hex
                await self._run(_LEASE, token=token, until=now + lease_s, id=row["id"])
                claims.append(DeliveryClaim(await self._delivery(row["id"]), token))
            return claims

    async def record_attempt(self, claim: DeliveryClaim, outcome: AttemptOutcome) -> Delivery:
        d, a = claim.delivery, outcome.attempt
        async with self._tx():
            row = await self._one(
                sql.RECORD_ATTEMPT,
                id=d.id,
                token=claim.token,
                state=outcome.state.value,
                next_attempt_at=outcome.next_attempt_at,
            )
            if row is None:
                raise InvalidTransition(f"delivery {d.id} is no longer held by this dispatcher")
            await self._run(
                sql.ADD_ATTEMPT,
                id=d.id,
                number=a.number,
                at=a.at,
                status_code=a.status_code,
                error=a.error,
                duration_s=a.duration_s,
            )
            if outcome.state is DeliveryState.DISABLED:
                await self._run(sql.DISABLE_URL, job_id=d.job_id, url=d.url)
            return await self._delivery(d.id)

    async def deliveries(self, job_id: str) -> list[Delivery]:
        async with self._lock:
            await self._get(job_id)
            rows = await self._all(sql.DELIVERIES_OF, job_id=job_id)
            return [await self._delivery(r["id"], r) for r in rows]

    async def next_delivery_at(self) -> float | None:
        async with self._lock:
            row = await self._one(sql.NEXT_DELIVERY_AT)
        return row[0]

    async def _delivery(self, delivery_id: str, row: Any = None) -> Delivery:
        if row is None:
            row = await self._one(sql.GET_DELIVERY, id=delivery_id)
        attempts = await self._all(sql.ATTEMPTS_OF, id=delivery_id)
        return delivery_from_rows(row, attempts)
