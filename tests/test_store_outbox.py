"""The webhook outbox, on both stores (SQLite, and PostgreSQL where a server is
reachable): one delivery row with every write that ends a job with a
callback_url, none otherwise; claims are leased and fenced; a 410 disables the
job's URL (E1, E2). On PostgreSQL dispatchers of many nodes racing for the
same rows never take one twice."""

from __future__ import annotations

import asyncio
import time

import pytest

from sona.errors import InvalidTransition, NotFound
from sona.jobs import Status
from sona.store import AttemptOutcome, DeliveryAttempt, DeliveryState, JobStore
from sona.store.postgres import PostgresStore
from tests.pg import pg_schema_url
from tests.test_store_contract import add, claim_of, new_job, seg

HOOK = "http://127.0.0.1:9/hook"


async def events(store: JobStore, job_id: str) -> list[str]:
    return [d.event for d in await store.deliveries(job_id)]


@pytest.mark.parametrize("status", [Status.COMPLETED, Status.FAILED, Status.CANCELLED])
async def test_finish_writes_one_delivery_with_the_terminal_status(
    store: JobStore, status: Status
) -> None:
    await store.create(new_job(id="j", callback_url=HOOK))
    await store.finish(
        await claim_of(store), status, error_code="x" if status == "failed" else None
    )
    [d] = await store.deliveries("j")
    assert (d.event, d.url, d.state) == (f"job.{status}", HOOK, DeliveryState.PENDING)
    assert d.id.startswith("msg_") and d.next_attempt_at is not None and d.attempts == []


async def test_no_delivery_without_callback_or_without_an_end(store: JobStore) -> None:
    await store.create(new_job(id="plain"))
    await store.finish(await claim_of(store), Status.COMPLETED)
    assert await events(store, "plain") == []
    await store.create(new_job(id="hooked", callback_url=HOOK, max_attempts=2))
    await store.finish(await claim_of(store), Status.QUEUED)  # a drain requeue
    await store.engine_crashed(await claim_of(store))  # crash 1 of 2: requeued
    assert await events(store, "hooked") == []
    job = await store.engine_crashed(await claim_of(store))  # crash 2: failed for good
    assert job.error_code == "worker_crashed"
    assert await events(store, "hooked") == ["job.failed"]


async def test_cancel_of_a_queued_job_writes_one_delivery_once(store: JobStore) -> None:
    await store.create(new_job(id="c", callback_url=HOOK))
    await store.cancel("c")
    await store.cancel("c")  # repeated: unchanged, nothing new
    assert await events(store, "c") == ["job.cancelled"]
    await store.create(new_job(id="p", callback_url=HOOK))
    await claim_of(store)
    await store.cancel("p")  # processing: only requested, the worker ends it
    assert await events(store, "p") == []


async def test_a_failed_terminal_write_writes_no_delivery(store: JobStore) -> None:
    await store.create(new_job(id="f", callback_url=HOOK))
    claim = await claim_of(store)
    await store.finish(claim, Status.COMPLETED)
    with pytest.raises(InvalidTransition):
        await store.finish(claim, Status.FAILED)  # a stale second end
    assert await events(store, "f") == ["job.completed"]


async def test_claims_are_leased_fenced_and_recorded(store: JobStore) -> None:
    await store.create(new_job(id="d", callback_url=HOOK))
    await store.cancel("d")
    [claim] = await store.claim_deliveries(limit=10, lease_s=30)
    assert await store.claim_deliveries(limit=10, lease_s=30) == []  # leased: nobody else
    attempt = DeliveryAttempt(1, time.time(), 500, "HTTP 500", 0.01)
    later = time.time() + 60
    d = await store.record_attempt(claim, AttemptOutcome(attempt, DeliveryState.PENDING, later))
    assert d.state is DeliveryState.PENDING and d.attempts == [attempt]
    assert await store.next_delivery_at() == pytest.approx(later)
    assert await store.claim_deliveries(limit=10, lease_s=30) == []  # not due yet
    with pytest.raises(InvalidTransition):  # the claim's lease ended with its record
        await store.record_attempt(claim, AttemptOutcome(attempt, DeliveryState.DELIVERED))


async def test_an_expired_lease_is_claimed_again(store: JobStore) -> None:
    await store.create(new_job(id="e", callback_url=HOOK))
    await store.cancel("e")
    [first] = await store.claim_deliveries(limit=10, lease_s=-1)  # run out already
    [second] = await store.claim_deliveries(limit=10, lease_s=30)
    assert second.delivery.id == first.delivery.id and second.token != first.token
    attempt = DeliveryAttempt(1, time.time(), 410, "HTTP 410 Gone", 0.01)
    with pytest.raises(InvalidTransition):  # the dispatcher that lost it records nothing
        await store.record_attempt(first, AttemptOutcome(attempt, DeliveryState.DISABLED))
    d = await store.record_attempt(second, AttemptOutcome(attempt, DeliveryState.DISABLED))
    assert d.state is DeliveryState.DISABLED and await store.next_delivery_at() is None


async def test_a_leased_delivery_is_not_due_before_its_lease_ends(store: JobStore) -> None:
    """An attempt under way is no reason for the dispatcher to wake (it would
    spin while a receiver hangs)."""
    await store.create(new_job(id="l", callback_url=HOOK))
    await store.cancel("l")
    assert await store.next_delivery_at() <= time.time()  # type: ignore[operator]
    await store.claim_deliveries(limit=10, lease_s=60)
    assert await store.next_delivery_at() > time.time() + 50  # type: ignore[operator]


async def test_a_dedupe_copy_writes_its_delivery(store: JobStore) -> None:
    await store.create(new_job(id="src", file_sha256="same"))
    claim = await claim_of(store)
    await add(store, claim, 0, [seg(0)])
    await store.finish(claim, Status.COMPLETED)
    copy, _ = await store.create(
        new_job(id="copy", file_sha256="same", callback_url=HOOK, dedupe=True)
    )
    assert copy.cached and await events(store, "copy") == ["job.completed"]


async def test_deliveries_of_an_unknown_job_is_not_found(store: JobStore) -> None:
    with pytest.raises(NotFound):
        await store.deliveries("nope")
    assert await store.next_delivery_at() is None


async def test_postgres_racing_dispatchers_never_share_a_delivery() -> None:
    """Four nodes' dispatchers, each with its own connection pool, claim 60 due
    deliveries in small batches at once: every delivery is claimed exactly once
    (``FOR UPDATE SKIP LOCKED``, then a lease)."""
    async with pg_schema_url() as url:
        stores = [await PostgresStore.open(url, max_size=3) for _ in range(4)]
        for i in range(60):
            await stores[0].create(new_job(id=f"h{i}", callback_url=HOOK))
            await stores[0].cancel(f"h{i}")

        async def dispatch(store: PostgresStore) -> list[str]:
            taken: list[str] = []
            while True:
                rounds = await asyncio.gather(
                    *(store.claim_deliveries(limit=2, lease_s=30) for _ in range(3))
                )
                claims = [c for batch in rounds for c in batch]
                if not claims:
                    return taken
                taken += [c.delivery.id for c in claims]

        results = await asyncio.gather(*(dispatch(s) for s in stores))
        claimed = [d for taken in results for d in taken]
        expected = [d.id for i in range(60) for d in await stores[0].deliveries(f"h{i}")]
        assert len(expected) == 60 and sorted(claimed) == sorted(expected)
        assert sum(1 for taken in results if taken) > 1  # they did race
        for s in stores:
            await s.close()
