"""The SQLite store's contract: idempotent create, claim order, fencing,
guarded transitions, crash recovery."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from service.errors import IdempotencyConflict, InvalidTransition, NotFound
from service.jobs import TRANSITIONS, NewJob, Segment, Status, TranscribeOptions
from service.store.sqlite import SqliteStore

_ids = itertools.count()


def new_job(**kw: object) -> NewJob:
    base: dict[str, object] = dict(
        id=f"job{next(_ids)}",
        options=TranscribeOptions(),
        model="tiny.en",
        priority=0,
        file_path="/x",
        file_name="a.wav",
        file_sha256="aaa",
        file_size=1,
        duration=10.0,
        max_attempts=2,
    )
    base.update(kw)
    return NewJob(**base)  # type: ignore[arg-type]


@pytest.fixture
async def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = await SqliteStore.open(str(tmp_path / "db.sqlite"))
    yield s
    await s.close()


def seg(i: int, text: str = "word") -> Segment:
    return Segment(index=i, start=i * 1.0, end=i + 1.0, text=f" {text}{i}")


async def test_create_is_idempotent_by_id_and_key(store: SqliteStore) -> None:
    job, created = await store.create(new_job(id="a1", idempotency_key="k1"))
    assert created and job.status == Status.QUEUED
    again, created = await store.create(new_job(id="a1"))
    assert not created and again.id == "a1"
    by_key, created = await store.create(new_job(id="other", idempotency_key="k1"))
    assert not created and by_key.id == "a1"
    with pytest.raises(IdempotencyConflict):
        await store.create(new_job(id="a1", file_sha256="bbb"))
    with pytest.raises(IdempotencyConflict):
        await store.create(new_job(id="zz", idempotency_key="k1", file_sha256="bbb"))
    with pytest.raises(NotFound):
        await store.get("zz")


async def test_claim_order_priority_then_loaded_model_then_age(store: SqliteStore) -> None:
    await store.create(new_job(id="old_small", model="small"))
    await store.create(new_job(id="new_tiny", model="tiny.en"))
    await store.create(new_job(id="urgent", model="small", priority=5))
    order = []
    while c := await store.claim(worker_id="w", prefer_models=["tiny.en"], lease_s=30):
        order.append(c.job.id)
    assert order == ["urgent", "new_tiny", "old_small"]


async def test_claim_counts_attempts_and_clears_old_segments(store: SqliteStore) -> None:
    await store.create(new_job(id="j"))
    c1 = await store.claim(worker_id="w", prefer_models=[], lease_s=30)
    assert c1 and c1.job.attempts == 1
    await store.add_segments(c1, [seg(0), seg(1)], 2.0)
    job = await store.get("j")
    assert job.segments_done == 2 and job.text == "word0 word1" and job.progress == 0.2
    # Crash: recovery requeues, the re-run replaces segments instead of adding to them.
    rec = await store.recover(is_dead=lambda w: w == "w")
    assert rec.requeued == ["j"]
    c2 = await store.claim(worker_id="w2", prefer_models=[], lease_s=30)
    assert c2 and c2.job.attempts == 2 and c2.job.segments_done == 0
    await store.add_segments(c2, [seg(0)], 1.0)
    assert [s.index for s in await store.segments("j")] == [0]


async def test_stale_worker_writes_are_fenced(store: SqliteStore) -> None:
    await store.create(new_job(id="j"))
    stale = await store.claim(worker_id="w1", prefer_models=[], lease_s=30)
    assert stale
    await store.recover(is_dead=lambda w: w == "w1")
    fresh = await store.claim(worker_id="w2", prefer_models=[], lease_s=30)
    assert fresh
    assert await store.add_segments(stale, [seg(0, "stale")], 5.0) is True  # told to stop
    assert not await store.heartbeat(stale, 30)
    with pytest.raises(InvalidTransition):
        await store.finish(stale, Status.COMPLETED)
    await store.add_segments(fresh, [seg(0, "fresh")], 1.0)
    done = await store.finish(fresh, Status.COMPLETED)
    assert done.status == Status.COMPLETED and done.text == "fresh0" and done.attempts == 2


async def test_recover_fails_job_out_of_attempts(store: SqliteStore) -> None:
    await store.create(new_job(id="poison", max_attempts=2))
    for _ in range(2):
        assert await store.claim(worker_id="dead", prefer_models=[], lease_s=30)
        rec = await store.recover(is_dead=lambda w: True)
    assert rec.failed == ["poison"]
    job = await store.get("poison")
    assert job.status == Status.FAILED and job.error_code == "worker_crashed"


async def test_live_owner_with_valid_lease_is_left_alone(store: SqliteStore) -> None:
    await store.create(new_job(id="j"))
    assert await store.claim(worker_id="alive", prefer_models=[], lease_s=30)
    rec = await store.recover(is_dead=lambda w: False)
    assert rec.requeued == [] and (await store.get("j")).status == Status.PROCESSING


async def test_expired_lease_is_recovered(store: SqliteStore) -> None:
    await store.create(new_job(id="j"))
    assert await store.claim(worker_id="alive", prefer_models=[], lease_s=-1)
    rec = await store.recover(is_dead=lambda w: False)
    assert rec.requeued == ["j"]


async def test_cancel_transitions(store: SqliteStore) -> None:
    await store.create(new_job(id="q"))
    assert (await store.cancel("q")).status == Status.CANCELLED
    assert (await store.cancel("q")).status == Status.CANCELLED  # idempotent
    await store.create(new_job(id="p"))
    claim = await store.claim(worker_id="w", prefer_models=[], lease_s=30)
    assert claim
    job = await store.cancel("p")
    assert job.status == Status.PROCESSING and job.cancel_requested
    assert await store.add_segments(claim, [seg(0)], 1.0) is True  # the worker is told
    await store.finish(claim, Status.CANCELLED)
    await store.create(new_job(id="c"))
    claim = await store.claim(worker_id="w", prefer_models=[], lease_s=30)
    assert claim
    await store.finish(claim, Status.COMPLETED)
    with pytest.raises(InvalidTransition):
        await store.cancel("c")


async def test_drain_requeue_does_not_count_an_attempt(store: SqliteStore) -> None:
    await store.create(new_job(id="j"))
    claim = await store.claim(worker_id="w", prefer_models=[], lease_s=30)
    assert claim
    job = await store.finish(claim, Status.QUEUED)
    assert job.status == Status.QUEUED and job.attempts == 0


@pytest.mark.parametrize("source,target", list(itertools.product(Status, Status)))
async def test_transition_table_is_enforced(
    store: SqliteStore, source: Status, target: Status
) -> None:
    """Drive a job to ``source`` and try the guarded write to ``target``."""
    await store.create(new_job(id="t"))
    claim = None
    if source != Status.QUEUED:
        claim = await store.claim(worker_id="w", prefer_models=[], lease_s=30)
        assert claim
        if source.finished:
            await store.finish(claim, source)
    if source == Status.QUEUED and target == Status.CANCELLED:
        assert (await store.cancel("t")).status == Status.CANCELLED
        return
    allowed = target in TRANSITIONS[source]
    if claim is None:  # queued: only claim and cancel can move it; claim covers → processing
        assert target in (Status.PROCESSING, Status.CANCELLED) or not allowed
        return
    if allowed:
        assert (await store.finish(claim, target)).status == target
    else:
        with pytest.raises(InvalidTransition):
            await store.finish(claim, target)


async def test_list_is_newest_first_with_cursor(store: SqliteStore) -> None:
    for i in range(5):
        await store.create(new_job(id=f"l{i}"))
    page, more = await store.list_jobs(status=None, limit=2, before=None)
    assert [j.id for j in page] == ["l4", "l3"] and more
    page, more = await store.list_jobs(status=None, limit=10, before="l3")
    assert [j.id for j in page] == ["l2", "l1", "l0"] and not more
    page, _ = await store.list_jobs(status=Status.COMPLETED, limit=10, before=None)
    assert page == []
