"""Which chunks form the next batch: priority, then a fair share of the rows
among jobs (each in turn, the one served longest ago first, then age), each
job's chunks in their own order, and only options that can share a forward
pass (A10, C4)."""

from __future__ import annotations

from dataclasses import replace

from sona.engine import ChunkInfo
from sona.engine.batcher import Pending, Pool, batch_key, owner, pack
from sona.jobs import TranscribeOptions


def pending(
    job: str, no: int, *, priority: int = 0, age: float = 0.0, seconds: float = 20, **opts: object
) -> Pending:
    options = TranscribeOptions(**opts)  # type: ignore[arg-type]
    chunk = ChunkInfo(job, no, 0, no * 30.0, no * 30.0 + 30, seconds)
    return Pending(chunk, batch_key("tiny.en", options, "en", job), priority, age)


def taken(batch: list[Pending]) -> list[tuple[str, int]]:
    return [(p.chunk.job_id, p.chunk.no) for p in batch]


def test_jobs_take_rows_in_turn_each_in_its_own_order() -> None:
    pool = Pool()
    for no in (2, 0, 1):
        pool.add(pending("old", no, age=1.0))
    pool.add(pending("new", 0, age=2.0))
    assert taken(pool.take_batch(3, 20)) == [("old", 0), ("old", 1), ("new", 0)]
    assert taken(pool.take_batch(3, 20)) == [("old", 2)]
    assert pool.take_batch(3, 20) == [] and len(pool) == 0


def test_a_short_job_behind_a_long_one_gets_a_row_in_the_next_batch() -> None:
    """The issue's case: one long upload, then a clip. The clip's chunks go out
    in the very next batches, and the long job alone fills every row again
    once the clip is done. The clip's first batch is its own (a step costs
    what its windows do: beside the long job's chunks the clip would wait
    for them); after that it takes one row a turn beside the long job."""
    pool = Pool()
    for no in range(16):  # the long job's look-ahead
        pool.add(pending("long", no, age=1.0))
    assert taken(pool.take_batch(3, 20)) == [("long", 0), ("long", 1), ("long", 2)]
    for no in range(3):
        pool.add(pending("clip", no, age=2.0, seconds=18))
    assert taken(pool.take_batch(3, 20)) == [("clip", 0), ("clip", 1), ("clip", 2)]
    pool.add(pending("clip", 3, age=2.0, seconds=8))
    # Served now, the clip shares: the long job, served longest ago, first.
    assert taken(pool.take_batch(3, 20)) == [("long", 3), ("long", 4), ("clip", 3)]
    assert taken(pool.take_batch(3, 20)) == [("long", 5), ("long", 6), ("long", 7)]


def test_a_job_never_served_shares_its_first_batch_only_with_such_jobs() -> None:
    pool = Pool()
    for no in range(4):
        pool.add(pending("long", no, age=1.0))
    assert taken(pool.take_batch(2, 20)) == [("long", 0), ("long", 1)]
    pool.add(pending("clip", 0, age=2.0))
    pool.add(pending("other", 0, age=3.0))
    assert taken(pool.take_batch(4, 20)) == [("clip", 0), ("other", 0)]
    assert taken(pool.take_batch(4, 20)) == [("long", 2), ("long", 3)]


def test_when_jobs_outnumber_rows_the_one_served_longest_ago_goes_first() -> None:
    pool = Pool()
    for job, age in (("a", 1.0), ("b", 2.0), ("c", 3.0)):
        for no in range(3):
            pool.add(pending(job, no, age=age))
    firsts = [taken(pool.take_batch(2, 20)) for _ in range(5)]
    assert firsts == [
        [("a", 0), ("b", 0)],
        [("c", 0), ("c", 1)],  # c never had a row: its first batch is its own
        [("a", 1), ("b", 1)],  # a's row was before b's
        [("c", 2), ("a", 2)],
        [("b", 2)],
    ]


def test_a_dropped_job_is_forgotten_by_the_fair_share() -> None:
    pool = Pool()
    pool.add(pending("a", 0, age=1.0))
    pool.add(pending("b", 0, age=2.0))
    assert taken(pool.take_batch(1, 20)) == [("a", 0)]
    pool.drop_job("a")
    pool.add(pending("a", 0, age=1.0))  # claimed again: a fresh run, never served
    pool.add(pending("b", 1, age=2.0))
    assert taken(pool.take_batch(1, 20)) == [("a", 0)]


def test_a_batch_groups_each_jobs_chunks_so_they_share_windows() -> None:
    """Round-robin picks a, b, a, b; the batch comes back a, a, b, b, so each
    job's short chunks pack into one window: two windows, not four."""
    pool = Pool()
    for job, age in (("a", 1.0), ("b", 2.0)):
        for no in range(2):
            pool.add(pending(job, no, age=age, seconds=4))
    batch = pool.take_batch(2, 20)
    assert taken(batch) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert len(pack([owner(p.chunk, p.chunk.seconds) for p in batch], 20)) == 2


def test_a_jobs_short_chunks_share_windows_and_a_batch_counts_windows() -> None:
    a = [("a", 4), ("a", 5), ("a", 6), ("a", 20), ("a", 3), ("a", 19)]
    assert pack(a, window_s=20) == [[0, 1, 2], [3], [4], [5]]
    pool = Pool()
    for n in range(12):  # twelve 4 s chunks of one job: four to a window
        pool.add(pending("long", n, age=1.0, seconds=4))
    assert [len(pool.take_batch(2, 20)) for _ in range(2)] == [8, 4]


def test_windows_never_mix_jobs_or_channels() -> None:
    """Words decoded in a shared window can cross the gap: one job's words
    must never land in another's transcript, nor one speaker's in another's."""
    chunks = [(("a", 0), 3), (("b", 0), 3), (("b", 0), 3), (("b", 1), 3), (("a", 0), 3)]
    assert pack(chunks, window_s=20) == [[0], [1, 2], [3], [4]]
    pool = Pool()
    for n in range(12):  # twelve 4 s clips of twelve jobs: one window each
        pool.add(pending(f"clip{n:02}", 0, age=n, seconds=4))
    assert [len(pool.take_batch(4, 20)) for _ in range(3)] == [4, 4, 4]


def test_chunks_of_several_jobs_share_a_batch() -> None:
    pool = Pool()
    for job, age in (("a", 1.0), ("b", 2.0), ("c", 3.0)):
        pool.add(pending(job, 0, age=age))
    assert taken(pool.take_batch(8, 20)) == [("a", 0), ("b", 0), ("c", 0)]


def test_interactive_chunks_go_first_in_a_batch_of_their_own_priority() -> None:
    pool = Pool()
    for no in range(10):
        pool.add(pending("long", no, age=1.0))
    pool.add(pending("sync", 0, priority=1_000_000, age=9.0))
    pool.add(pending("sync2", 0, priority=1_000_000, age=10.0))
    assert taken(pool.take_batch(4, 20)) == [("sync", 0), ("sync2", 0)]
    assert taken(pool.take_batch(4, 20)) == [("long", 0), ("long", 1), ("long", 2), ("long", 3)]


def test_incompatible_options_never_share_a_batch() -> None:
    pool = Pool()
    pool.add(pending("plain", 0, age=1.0))
    pool.add(pending("words", 0, age=2.0, word_timestamps=True))
    pool.add(pending("prompted", 0, age=3.0, prompt="Sona"))
    pool.add(pending("plain2", 0, age=4.0))
    assert taken(pool.take_batch(8, 20)) == [("plain", 0), ("plain2", 0)]
    assert taken(pool.take_batch(8, 20)) == [("words", 0)]
    assert taken(pool.take_batch(8, 20)) == [("prompted", 0)]


def test_a_sequential_job_is_batched_with_nobody() -> None:
    pool = Pool()
    pool.add(pending("seq", 0, age=1.0, condition_on_previous_text=True))
    pool.add(pending("seq2", 0, age=2.0, condition_on_previous_text=True))
    pool.add(pending("plain", 0, age=3.0))
    assert [taken(pool.take_batch(8, 20)) for _ in range(3)] == [
        [("seq", 0)],
        [("seq2", 0)],
        [("plain", 0)],
    ]


def test_dropping_a_job_removes_only_its_chunks() -> None:
    pool = Pool()
    for no in range(3):
        pool.add(pending("gone", no))
        pool.add(pending("kept", no, age=1.0))
    pool.drop_job("gone")
    assert taken(pool.take_batch(8, 20)) == [("kept", 0), ("kept", 1), ("kept", 2)]


def test_a_suspects_chunks_go_one_to_a_batch_and_beside_nobody_elses() -> None:
    """A job that crashed the engine before: each of its chunks is a batch of
    its own, the others' batches never hold one, and an interactive request's
    chunk still goes first."""
    pool = Pool()
    for no in range(2):
        pool.add(replace(pending("suspect", no, age=1.0, seconds=4), suspect=True))
        pool.add(pending("other", no, age=2.0, seconds=4))
    pool.add(pending("interactive", 0, priority=10, age=3.0, seconds=4))
    assert taken(pool.take_batch(8, 20)) == [("interactive", 0)]
    assert taken(pool.take_batch(8, 20)) == [("suspect", 0)]
    # The fair share: the other job, not served yet, then the suspect again.
    assert taken(pool.take_batch(8, 20)) == [("other", 0), ("other", 1)]
    assert taken(pool.take_batch(8, 20)) == [("suspect", 1)]


def test_a_batch_led_by_another_job_leaves_the_suspects_chunks_out() -> None:
    pool = Pool()
    pool.add(pending("first", 0, age=1.0, seconds=4))
    pool.add(replace(pending("suspect", 0, age=2.0, seconds=4), suspect=True))
    pool.add(pending("third", 0, age=3.0, seconds=4))
    assert taken(pool.take_batch(8, 20)) == [("first", 0), ("third", 0)]
    assert taken(pool.take_batch(8, 20)) == [("suspect", 0)]
