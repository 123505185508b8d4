"""The webhook outbox (E1, E2), written once for both stores: the delivery
row written with every terminal status, in the same transaction, and the
delivery methods of the ``JobStore`` contract. ``claim_deliveries`` is each
store's own (``sqlite.py``: one transaction holds the whole file;
``postgres.py``: ``FOR UPDATE SKIP LOCKED`` across nodes)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from sona.errors import InvalidTransition, NotFound
from sona.store import AttemptOutcome, Delivery, DeliveryClaim, DeliveryState, sql
from sona.store.rows import delivery_from_rows, new_delivery_id

if TYPE_CHECKING:
    from sona.store.sqlstore import Conn


class OutboxMixin:
    """The delivery methods of ``SqlStore``; its connections are theirs."""

    if TYPE_CHECKING:

        def _tx(self) -> AbstractAsyncContextManager[Conn]: ...
        def _read(self) -> AbstractAsyncContextManager[Conn]: ...

    def _snapshot(self) -> AbstractAsyncContextManager[Conn]:
        """Where a delivery and its attempts are read together: one snapshot
        (SQLite's reads are one already: one connection, under the lock)."""
        return self._read()

    async def _outbox(self, c: Conn, job_id: str, event: str | None = None) -> None:
        """Within the transaction that ended the job (or replaced its
        transcript: ``event``): its webhook delivery."""
        await c.run(sql.OUTBOX, delivery_id=new_delivery_id(), job_id=job_id, event=event)

    async def _with_attempts(self, c: Conn, rows: list[Any]) -> list[Delivery]:
        """Delivery rows with their attempts, in order."""
        return [delivery_from_rows(r, await c.all(sql.ATTEMPTS_OF, id=r["id"])) for r in rows]

    async def record_attempt(self, claim: DeliveryClaim, outcome: AttemptOutcome) -> Delivery:
        d, a = claim.delivery, outcome.attempt
        async with self._tx() as c:
            row = await c.one(
                sql.RECORD_ATTEMPT,
                id=d.id,
                token=claim.token,
                state=outcome.state.value,
                next_attempt_at=outcome.next_attempt_at,
            )
            if row is None:
                raise InvalidTransition(f"delivery {d.id} is no longer held by this dispatcher")
            await c.run(
                sql.ADD_ATTEMPT,
                id=d.id,
                number=a.number,
                at=a.at,
                status_code=a.status_code,
                error=a.error,
                duration_s=a.duration_s,
            )
            if outcome.state is DeliveryState.DISABLED:
                await c.run(sql.DISABLE_URL, job_id=d.job_id, url=d.url)
            [delivery] = await self._with_attempts(c, [row])
            return delivery

    async def deliveries(self, job_id: str) -> list[Delivery]:
        async with self._snapshot() as c:
            if await c.one(sql.GET_JOB, id=job_id) is None:
                raise NotFound(f"no job with id {job_id!r}", param="job_id")
            return await self._with_attempts(c, await c.all(sql.DELIVERIES_OF, job_id=job_id))

    async def next_delivery_at(self) -> float | None:
        async with self._read() as c:
            row = await c.one(sql.NEXT_DELIVERY_AT)
        due: float | None = row[0]
        return due
