"""The webhook outbox in the SQLite store: one delivery row with every write
that ends a job with a callback_url, none otherwise; claims are leased and
fenced; a 410 disables the job's URL (E1, E2)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from service.errors import InvalidTransition
from service.jobs import Status
from service.store import AttemptOutcome, DeliveryAttempt, DeliveryState
from service.store.sqlite import SqliteStore
from tests.test_store_sqlite import claim_of, new_job

HOOK = "http://127.0.0.1:9/hook"


@pytest.fixture
async def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = await SqliteStore.open(str(tmp_path / "db.sqlite"))
    yield s
    await s.close()


async def events(store: SqliteStore, job_id: str) -> list[str]:
    return [d.event for d in await store.deliveries(job_id)]


@pytest.mark.parametrize("status", [Status.COMPLETED, Status.FAILED, Status.CANCELLED])
async def test_finish_writes_one_delivery_with_the_terminal_status(
    store: SqliteStore, status: Status
) -> None:
    await store.create(new_job(id="j", callback_url=HOOK))
    await store.finish(
        await claim_of(store), status, error_code="x" if status == "failed" else None
    )
    [d] = await store.deliveries("j")
    assert (d.event, d.url, d.state) == (f"job.{status}", HOOK, DeliveryState.PENDING)
    assert d.id.startswith("msg_") and d.next_attempt_at is not None and d.attempts == []


async def test_no_delivery_without_callback_or_without_an_end(store: SqliteStore) -> None:
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


async def test_cancel_of_a_queued_job_writes_one_delivery_once(store: SqliteStore) -> None:
    await store.create(new_job(id="c", callback_url=HOOK))
    await store.cancel("c")
    await store.cancel("c")  # repeated: unchanged, nothing new
    assert await events(store, "c") == ["job.cancelled"]
    await store.create(new_job(id="p", callback_url=HOOK))
    await claim_of(store)
    await store.cancel("p")  # processing: only requested, the worker ends it
    assert await events(store, "p") == []


async def test_a_failed_terminal_write_writes_no_delivery(store: SqliteStore) -> None:
    await store.create(new_job(id="f", callback_url=HOOK))
    claim = await claim_of(store)
    await store.finish(claim, Status.COMPLETED)
    with pytest.raises(InvalidTransition):
        await store.finish(claim, Status.FAILED)  # a stale second end
    assert await events(store, "f") == ["job.completed"]


async def test_claims_are_leased_fenced_and_recorded(store: SqliteStore) -> None:
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


async def test_an_expired_lease_is_claimed_again(store: SqliteStore) -> None:
    await store.create(new_job(id="e", callback_url=HOOK))
    await store.cancel("e")
    [first] = await store.claim_deliveries(limit=10, lease_s=0.01)
    await asyncio.sleep(0.02)
    [second] = await store.claim_deliveries(limit=10, lease_s=30)
    assert second.delivery.id == first.delivery.id and second.token != first.token
    attempt = DeliveryAttempt(1, time.time(), 410, "HTTP 410 Gone", 0.01)
    with pytest.raises(InvalidTransition):  # the dispatcher that lost it records nothing
        await store.record_attempt(first, AttemptOutcome(attempt, DeliveryState.DISABLED))
    d = await store.record_attempt(second, AttemptOutcome(attempt, DeliveryState.DISABLED))
    assert d.state is DeliveryState.DISABLED and await store.next_delivery_at() is None
