"""The JobStore contract, run against both stores (SQLite, and PostgreSQL where
a server is reachable): idempotent create, claim order, fencing, guarded
transitions, crash recovery, warnings, dedupe. Tests of one store's own
behaviour say so. The webhook outbox's share of the contract:
test_store_outbox.py; the schema and older databases: test_store_schema.py."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from pathlib import Path

import asyncpg
import pytest

from sona.errors import IdempotencyConflict, InvalidTransition, NotFound, StorageFull
from sona.formats import in_order, render
from sona.jobs import TRANSITIONS, NewJob, Segment, Status, TranscribeOptions
from sona.store import Claim, JobStore, Lease
from sona.store.postgres import PostgresStore
from sona.store.schema import LATEST
from sona.store.sqlite import SqliteStore
from tests.pg import pg_schema_url

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


def seg(i: int, text: str = "word") -> Segment:
    return Segment(index=i, start=i * 1.0, end=i + 1.0, text=f" {text}{i}")


async def test_create_is_idempotent_by_id_and_key(store: JobStore) -> None:
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


async def test_claim_order_priority_then_loaded_model_then_age(store: JobStore) -> None:
    await store.create(new_job(id="old_small", model="small"))
    await store.create(new_job(id="new_tiny", model="tiny.en"))
    await store.create(new_job(id="urgent", model="small", priority=5))
    order = []
    while c := await store.claim(worker_id="w", prefer_models=["tiny.en"], lease_s=30):
        order.append(c.job.id)
    assert order == ["urgent", "new_tiny", "old_small"]


async def test_queue_ahead_counts_the_queued_jobs_a_claim_takes_first(store: JobStore) -> None:
    """Position and ETA (docs/api.md) rest on this: priority, then age."""
    first, _ = await store.create(new_job(id="first", duration=100.0))
    second, _ = await store.create(new_job(id="second", duration=30.0))
    unknown, _ = await store.create(new_job(id="unknown", duration=None))
    last, _ = await store.create(new_job(id="last", duration=5.0))
    urgent, _ = await store.create(new_job(id="urgent", priority=5, duration=7.0))
    assert await store.queue_ahead(urgent) == (0, 0.0)
    assert await store.queue_ahead(first) == (1, 7.0)
    assert await store.queue_ahead(last) == (4, 137.0)  # an unknown duration counts 0
    await claim_of(store)  # urgent leaves the queue: everyone moves up
    await claim_of(store)
    assert await store.queue_ahead(second) == (0, 0.0)
    assert await store.queue_ahead(last) == (2, 30.0)


async def add(
    store: JobStore, claim: Claim, first: int, segments: list[Segment], chunks: int = 1
) -> Lease:
    end = max((s.end for s in segments), default=0.0)
    return await store.add_chunks(
        claim, first=first, count=chunks, segments=segments, processed_seconds=end
    )


async def claim_of(store: JobStore, worker: str = "w", lease_s: float = 30) -> Claim:
    """``lease_s=-1``: a lease that has run out already, as a dead worker's has."""
    claim = await store.claim(worker_id=worker, prefer_models=[], lease_s=lease_s)
    assert claim is not None
    return claim


async def test_rerun_keeps_stored_chunks_and_resumes_after_them(store: JobStore) -> None:
    await store.create(new_job(id="j"))
    c1 = await claim_of(store, lease_s=-1)
    assert c1.job.attempts == 1
    assert await add(store, c1, 0, [seg(0), seg(1)], chunks=2) is Lease.HELD
    job = await store.get("j")
    assert job.segments_done == 2 and job.text == "word0 word1" and job.progress == 0.2
    # The daemon dies: recovery requeues, and the re-run starts after chunk 1.
    assert (await store.recover(is_dead=lambda w: w == "w")).requeued == ["j"]
    c2 = await claim_of(store, "w2")
    assert (c2.job.attempts, c2.job.chunks_done, c2.job.segments_done) == (2, 2, 2)
    with pytest.raises(InvalidTransition):  # a chunk is stored once
        await add(store, c2, 0, [seg(0)])
    await add(store, c2, 2, [seg(2)])
    assert [s.index for s in await store.segments("j")] == [0, 1, 2]
    done = await store.finish(c2, Status.COMPLETED)
    assert done.text == "word0 word1 word2" and done.crashes == 0


async def test_text_reads_in_time_order_whatever_the_storing_order(store: JobStore) -> None:
    await store.create(new_job(id="st"))
    claim = await claim_of(store)
    left = Segment(index=0, start=0.2, end=1.9, text=" Left first.", speaker="left")
    right = Segment(index=1, start=2.4, end=4.1, text=" Right second.", speaker="right")
    late_left = Segment(index=2, start=1.0, end=2.0, text=" Left again.", speaker="left")
    await add(store, claim, 0, [left, right])
    await add(store, claim, 1, [late_left])
    job = await store.finish(claim, Status.COMPLETED)
    assert job.text == "Left first. Left again. Right second."
    segments = await store.segments("st")
    assert [s.index for s in segments] == [0, 1, 2]  # streams read in stored order
    assert render(job, segments, "text")[0] == job.text + "\n"
    assert [s.index for s in in_order(segments)] == [0, 2, 1]


async def test_a_chunk_write_costs_the_same_late_in_a_long_job_as_early(
    tmp_path: Path,
) -> None:
    """A write touches its own chunk's rows only (issue 17.6): SQLite's virtual
    machine runs about as many instructions for the 600th chunk as for the first
    (re-reading every stored segment made it grow with the job)."""
    store = await SqliteStore.open(str(tmp_path / "db.sqlite"))
    try:
        await store.create(new_job(id="long"))
        claim = await claim_of(store)
        steps = 0

        def count() -> int:
            nonlocal steps
            steps += 1
            return 0

        await store._db.set_progress_handler(count, 10)

        async def write(chunk: int) -> int:
            nonlocal steps
            steps = 0
            await add(store, claim, chunk, [seg(chunk * 5 + i) for i in range(5)])
            return steps

        first = await write(0)
        for chunk in range(1, 600):
            await write(chunk)
        last = await write(600)
        assert last <= 2 * first, (first, last)
        job = await store.get("long")
        assert job.segments_done == 601 * 5
        assert job.text.startswith("word0 word1 ") and job.text.endswith(" word3004")
    finally:
        await store.close()


async def test_r09_stale_worker_writes_are_fenced(store: JobStore) -> None:
    await store.create(new_job(id="j"))
    stale = await claim_of(store, "w1", lease_s=-1)
    await store.recover(is_dead=lambda w: w == "w1")
    fresh = await claim_of(store, "w2")
    assert await add(store, stale, 0, [seg(0, "stale")]) is Lease.LOST  # told to stop
    assert await store.heartbeat(stale, 30) is Lease.LOST
    with pytest.raises(InvalidTransition):
        await store.finish(stale, Status.COMPLETED)
    with pytest.raises(InvalidTransition):
        await store.engine_crashed(stale)
    await add(store, fresh, 0, [seg(0, "fresh")])
    done = await store.finish(fresh, Status.COMPLETED)
    assert done.status == Status.COMPLETED and done.text == "fresh0" and done.attempts == 2


async def test_engine_crashes_count_toward_max_attempts(store: JobStore) -> None:
    await store.create(new_job(id="poison", max_attempts=2))
    job = await store.engine_crashed(await claim_of(store))
    assert (job.status, job.crashes, job.attempts) == (Status.QUEUED, 1, 1)
    job = await store.engine_crashed(await claim_of(store))
    assert job.status == Status.FAILED and job.error_code == "worker_crashed"
    assert job.crashes == 2 and job.finished_at is not None


async def test_daemon_deaths_never_fail_a_job(store: JobStore) -> None:
    await store.create(new_job(id="unlucky", max_attempts=2))
    for _ in range(4):
        await claim_of(store, "dead", lease_s=-1)
        assert (await store.recover(is_dead=lambda w: True)).requeued == ["unlucky"]
    job = await store.get("unlucky")
    assert (job.status, job.attempts, job.crashes) == (Status.QUEUED, 4, 0)


async def test_live_owner_with_valid_lease_is_left_alone(store: JobStore) -> None:
    await store.create(new_job(id="j"))
    assert await store.claim(worker_id="alive", prefer_models=[], lease_s=30)
    rec = await store.recover(is_dead=lambda w: False)
    assert rec.requeued == [] and (await store.get("j")).status == Status.PROCESSING


async def test_expired_lease_is_recovered(store: JobStore) -> None:
    await store.create(new_job(id="j"))
    assert await store.claim(worker_id="alive", prefer_models=[], lease_s=-1)
    rec = await store.recover(is_dead=lambda w: False)
    assert rec.requeued == ["j"]


async def test_cancel_transitions(store: JobStore) -> None:
    await store.create(new_job(id="q"))
    assert (await store.cancel("q")).status == Status.CANCELLED
    assert (await store.cancel("q")).status == Status.CANCELLED  # idempotent
    await store.create(new_job(id="p"))
    claim = await store.claim(worker_id="w", prefer_models=[], lease_s=30)
    assert claim
    job = await store.cancel("p")
    assert job.status == Status.PROCESSING and job.cancel_requested
    assert await add(store, claim, 0, [seg(0)]) is Lease.CANCEL_REQUESTED  # the worker is told
    assert await store.heartbeat(claim, 30) is Lease.CANCEL_REQUESTED
    await store.finish(claim, Status.CANCELLED)
    await store.create(new_job(id="c"))
    claim = await store.claim(worker_id="w", prefer_models=[], lease_s=30)
    assert claim
    await store.finish(claim, Status.COMPLETED)
    with pytest.raises(InvalidTransition):
        await store.cancel("c")


async def test_drain_requeue_does_not_count_an_attempt(store: JobStore) -> None:
    await store.create(new_job(id="j"))
    claim = await store.claim(worker_id="w", prefer_models=[], lease_s=30)
    assert claim
    job = await store.finish(claim, Status.QUEUED)
    assert job.status == Status.QUEUED and job.attempts == 0


@pytest.mark.parametrize("source,target", list(itertools.product(Status, Status)))
async def test_transition_table_is_enforced(
    store: JobStore, source: Status, target: Status
) -> None:
    """Drive a job to ``source`` and try the store's write to ``target``: it
    succeeds exactly when ``TRANSITIONS`` allows it. A queued job moves only by
    claim (→ processing) and cancel (→ cancelled); every other write to it must
    be refused, which ``finish`` with a claim that holds no lease shows."""
    await store.create(new_job(id="t"))
    allowed = target in TRANSITIONS[source]
    if source == Status.QUEUED:
        if target == Status.PROCESSING:
            claim = await store.claim(worker_id="w", prefer_models=[], lease_s=30)
            assert allowed and claim is not None and claim.job.status == Status.PROCESSING
        elif target == Status.CANCELLED:
            assert allowed and (await store.cancel("t")).status == Status.CANCELLED
        else:
            assert not allowed
            queued = await store.get("t")
            with pytest.raises(InvalidTransition):
                await store.finish(Claim(queued, "no-lease"), target)
            assert (await store.get("t")).status == Status.QUEUED
        return
    claim = await store.claim(worker_id="w", prefer_models=[], lease_s=30)
    assert claim
    if source.finished:
        await store.finish(claim, source)
    if allowed:
        assert (await store.finish(claim, target)).status == target
    else:
        with pytest.raises(InvalidTransition):
            await store.finish(claim, target)
        assert (await store.get("t")).status == source


async def test_list_is_newest_first_with_cursor(store: JobStore) -> None:
    for i in range(5):
        await store.create(new_job(id=f"l{i}"))
    page, more = await store.list_jobs(status=None, limit=2, before=None)
    assert [j.id for j in page] == ["l4", "l3"] and more
    page, more = await store.list_jobs(status=None, limit=10, before="l3")
    assert [j.id for j in page] == ["l2", "l1", "l0"] and not more
    page, _ = await store.list_jobs(status=Status.COMPLETED, limit=10, before=None)
    assert page == []


async def test_warnings_are_stored_with_the_decoded_info(store: JobStore) -> None:
    await store.create(new_job(id="w"))
    claim = await claim_of(store)
    assert claim.job.warnings == []
    await store.set_info(claim, duration=3.5, language="en", warnings=["audio_truncated"])
    job = await store.get("w")
    assert (job.duration, job.language, job.warnings) == (3.5, "en", ["audio_truncated"])
    await store.set_info(claim, duration=3.5, language="en")  # none given: none kept
    assert (await store.get("w")).warnings == []


async def test_a_detected_language_keeps_its_probability(store: JobStore) -> None:
    await store.create(new_job(id="d"))
    claim = await claim_of(store)
    await store.set_info(claim, duration=2.0, language="es", language_probability=0.875)
    job = await store.get("d")
    assert (job.language, job.language_probability) == ("es", 0.875)
    await store.set_info(claim, duration=2.0, language="en")  # named by the request
    assert (await store.get("d")).language_probability is None


async def completed_source(store: JobStore) -> tuple[str, list[Segment]]:
    """A completed job of file hash ``same`` with two segments and a warning."""
    await store.create(new_job(id="src", file_sha256="same", file_path="/src"))
    claim = await claim_of(store)
    await store.set_info(
        claim, duration=2.0, language="en", warnings=["audio_truncated"], language_probability=0.5
    )
    await add(store, claim, 0, [seg(0, "cached"), seg(1, "cached")])
    await store.finish(claim, Status.COMPLETED)
    return "src", await store.segments("src")


async def test_dedupe_answers_from_a_completed_job_with_a_copy(store: JobStore) -> None:
    source_id, source_segments = await completed_source(store)
    source = await store.get(source_id)
    copy, created = await store.create(
        new_job(id="copy", file_sha256="same", file_path="/copy", metadata={"m": 1}, dedupe=True)
    )
    assert created and copy.status == Status.COMPLETED and copy.cached and not source.cached
    assert (copy.attempts, copy.file_path, copy.metadata) == (0, "/copy", {"m": 1})
    assert (copy.text, copy.duration, copy.language, copy.warnings) == (
        source.text,
        source.duration,
        source.language,
        ["audio_truncated"],
    )
    assert copy.language_probability == source.language_probability == 0.5
    assert copy.finished_at is not None and copy.progress == 1.0
    assert await store.segments("copy") == source_segments
    # The copy is a job of its own: deleting the source keeps it whole.
    await store.delete(source_id)
    assert [s.text for s in await store.segments("copy")] == [s.text for s in source_segments]
    again, created = await store.create(new_job(id="copy", file_sha256="same", dedupe=True))
    assert not created and again.id == "copy"


async def test_dedupe_needs_the_same_file_and_options_and_the_ask(store: JobStore) -> None:
    await completed_source(store)
    runs = [
        new_job(id="other_file", file_sha256="other", dedupe=True),
        new_job(
            id="other_options",
            file_sha256="same",
            options=TranscribeOptions(word_timestamps=True),
            dedupe=True,
        ),
        new_job(id="not_asked", file_sha256="same"),
    ]
    for new in runs:
        job, created = await store.create(new)
        assert created and job.status == Status.QUEUED and not job.cached, new.id
    # Only completed jobs answer: a failed one with the same file does not.
    failed = await claim_of(store)
    assert failed.job.id == "other_file"
    await store.finish(failed, Status.FAILED, error_code="x")
    job, _ = await store.create(new_job(id="late", file_sha256="other", dedupe=True))
    assert job.status == Status.QUEUED and not job.cached


# -- each store's own rules ----------------------------------------------------


async def test_sqlite_requeues_a_dead_local_owners_job_at_once(tmp_path: Path) -> None:
    store = await SqliteStore.open(str(tmp_path / "db.sqlite"))
    await store.create(new_job(id="j"))
    await claim_of(store, "gone")  # a valid lease, but its process is dead
    assert (await store.recover(is_dead=lambda w: w == "gone")).requeued == ["j"]
    await store.close()


async def test_postgres_judges_liveness_by_lease_only() -> None:
    """A worker on another machine cannot be checked: only its lease counts."""
    async with pg_schema_url() as url:
        store = await PostgresStore.open(url)
        await store.create(new_job(id="j"))
        await claim_of(store, "elsewhere")
        assert (await store.recover(is_dead=lambda w: True)).requeued == []
        await store.close()


async def test_postgres_nodes_starting_together_migrate_once() -> None:
    async with pg_schema_url() as url:
        stores = await asyncio.gather(*(PostgresStore.open(url) for _ in range(4)))
        conn = await asyncpg.connect(url)
        versions = await conn.fetch("SELECT version FROM sona_schema ORDER BY version")
        await conn.close()
        assert [r["version"] for r in versions] == list(range(1, LATEST + 1))
        for s in stores:
            await s.close()


async def test_postgres_racing_workers_never_share_a_job() -> None:
    """Four workers, each with its own connection pool, empty a queue of 40 at once:
    every job is claimed exactly once (FOR UPDATE SKIP LOCKED)."""
    async with pg_schema_url() as url:
        stores = [await PostgresStore.open(url, max_size=2) for _ in range(4)]
        for i in range(40):
            await stores[0].create(new_job(id=f"r{i}"))

        async def drain(store: PostgresStore, name: str) -> list[str]:
            taken = []
            while c := await store.claim(worker_id=name, prefer_models=[], lease_s=30):
                taken.append(c.job.id)
            return taken

        results = await asyncio.gather(*(drain(s, f"w{n}") for n, s in enumerate(stores)))
        claimed = [job_id for taken in results for job_id in taken]
        assert sorted(claimed) == sorted(f"r{i}" for i in range(40))
        assert [(await stores[0].get(j)).attempts for j in claimed] == [1] * 40
        for s in stores:
            await s.close()


async def test_postgres_full_disk_is_storage_full() -> None:
    """SQLSTATE 53100 (disk_full), raised here by a trigger as the server raises
    it when it cannot extend a file, is ``StorageFull``; writes work again once
    it is gone."""
    async with pg_schema_url() as url:
        store = await PostgresStore.open(url)
        conn = await asyncpg.connect(url)
        await conn.execute(
            """CREATE FUNCTION no_room() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN RAISE EXCEPTION 'could not extend file' USING ERRCODE = 'disk_full';
               END $$"""
        )
        await conn.execute(
            "CREATE TRIGGER no_room BEFORE INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION no_room()"
        )
        with pytest.raises(StorageFull):
            await store.create(new_job(id="full"))
        await conn.execute("DROP TRIGGER no_room ON jobs")
        await conn.close()
        job, created = await store.create(new_job(id="full"))
        assert created and job.status == Status.QUEUED
        await store.close()


async def test_a_write_cancelled_at_any_point_leaves_the_store_usable(store: JobStore) -> None:
    """Tasks are cancelled at shutdown wherever they are; one cancelled while its
    BEGIN was on its way must not leave the connection inside a transaction
    (every later write would fail: "cannot start a transaction within a
    transaction")."""
    for n in range(30):
        task = asyncio.create_task(store.create(new_job(id=f"c{n}")))
        for _ in range(n % 6):  # cancel it at a different await each time
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    job, created = await store.create(new_job(id="after"))
    assert created and job.status == Status.QUEUED
    assert await store.claim(worker_id="w", prefer_models=[], lease_s=30) is not None


async def test_a_live_job_starts_processing_and_no_claim_takes_it(store: JobStore) -> None:
    live = await store.start_live(new_job(id="live1"), worker_id="w-live", lease_s=30)
    assert live.job.status is Status.PROCESSING and live.job.attempts == 1
    await store.create(new_job(id="batch"))
    taken = await store.claim(worker_id="w", prefer_models=[], lease_s=30)
    assert taken is not None and taken.job.id == "batch"
    assert await store.claim(worker_id="w", prefer_models=[], lease_s=30) is None
    assert (
        await store.add_chunks(
            live, first=0, count=1, segments=[seg(0, "hello")], processed_seconds=1.0
        )
        is Lease.HELD
    )
    done = await store.finish(live, Status.COMPLETED)
    assert done.status is Status.COMPLETED and "hello" in (done.text or "")


async def _live_with_refinement(store: JobStore, model: str = "base") -> tuple[str, str]:
    """A completed live job (two turns, a callback) and its queued second pass."""
    live = await store.start_live(
        new_job(id="live", metadata={"live_session": "s"}, callback_url="http://h/x"),
        worker_id="w-live",
        lease_s=30,
    )
    await add(store, live, 0, [seg(0, "turn"), seg(1, "turn")])
    second = new_job(id="second", model=model, file_path="/y", callback_url="http://h/x")
    done = await store.finish(live, Status.COMPLETED, refinement=second)
    assert done.metadata == {"live_session": "s", "refined_by": "second"}
    return done.id, second.id


async def test_a_completed_second_pass_replaces_the_live_jobs_transcript(store: JobStore) -> None:
    live_id, second_id = await _live_with_refinement(store)
    queued = await store.get(second_id)
    assert queued.status is Status.QUEUED and queued.refines == live_id
    assert queued.file_path == "/y" and queued.model == "base"
    claim = await claim_of(store)
    assert claim.job.id == second_id
    await store.set_info(claim, duration=2.0, language="en", language_probability=0.9)
    await add(store, claim, 0, [seg(0, "file"), seg(1, "file"), seg(2, "file")])
    finished = await store.finish(claim, Status.COMPLETED)
    assert finished.refines == live_id
    live = await store.get(live_id)
    assert live.status is Status.COMPLETED
    assert (live.text, live.model, live.language, live.segments_done) == (
        "file0 file1 file2",
        "base",
        "en",
        3,
    )
    assert live.language_probability == pytest.approx(0.9)
    assert await store.segments(live_id) == await store.segments(second_id)
    assert live.metadata == {"live_session": "s", "refined_by": second_id}
    events = [d.event for d in await store.deliveries(live_id)]
    assert events == ["job.completed", "job.transcript_replaced"]
    assert [d.event for d in await store.deliveries(second_id)] == ["job.completed"]


async def test_a_failed_second_pass_leaves_the_live_transcript(store: JobStore) -> None:
    live_id, _ = await _live_with_refinement(store)
    claim = await claim_of(store)
    await add(store, claim, 0, [seg(0, "file")])
    await store.finish(claim, Status.FAILED, error_code="engine_error", error_message="x")
    live = await store.get(live_id)
    assert live.text == "turn0 turn1" and live.model == "tiny.en" and live.segments_done == 2
    assert [s.text for s in await store.segments(live_id)] == [" turn0", " turn1"]
    assert [d.event for d in await store.deliveries(live_id)] == ["job.completed"]


async def test_a_second_pass_whose_live_job_is_gone_completes_alone(store: JobStore) -> None:
    live_id, second_id = await _live_with_refinement(store)
    await store.delete(live_id)
    claim = await claim_of(store)
    await add(store, claim, 0, [seg(0, "file")])
    done = await store.finish(claim, Status.COMPLETED)
    assert done.status is Status.COMPLETED and done.text == "file0"
    with pytest.raises(NotFound):
        await store.get(live_id)


async def test_only_a_completed_job_queues_a_second_pass(store: JobStore) -> None:
    live = await store.start_live(new_job(id="live"), worker_id="w-live", lease_s=30)
    with pytest.raises(InvalidTransition):
        await store.finish(live, Status.FAILED, refinement=new_job(id="second"))
    with pytest.raises(NotFound):
        await store.get("second")
