"""Where a job stands: the measured throughput and the estimates built on it
(service/standing.py). The clock is passed in, so these need no waiting."""

from __future__ import annotations

from pathlib import Path

from sona.jobs import NewJob, Status, TranscribeOptions
from sona.standing import Standing, Throughput, eta_in_flight, eta_queued, rounded, standings
from sona.store import open_store


def test_throughput_counts_audio_per_second_of_work_not_of_idling() -> None:
    meter = Throughput(least_s=5)
    assert meter.rate(0) is None  # nothing measured
    meter.set_busy(100, True)
    meter.add(102, 20)
    assert meter.rate(104) is None  # under least_s of work: no rate yet
    meter.add(110, 20)
    assert meter.rate(110) == 4.0  # 40 s of audio in 10 s of work
    meter.set_busy(110, False)
    assert meter.rate(1000) == 4.0  # idle time does not dilute it
    meter.set_busy(1000, True)
    assert meter.rate(1010) == 2.0  # a stall while busy does: 40 s in 20 s


def test_throughput_forgets_work_older_than_its_window() -> None:
    meter = Throughput(window_s=60, least_s=5)
    meter.set_busy(0, True)
    for t in range(10, 310, 10):  # slow at first: 10 s of audio per 10 s
        meter.add(t, 10 if t < 200 else 100)  # then ten times faster
    assert meter.rate(300) is not None and meter.rate(300) > 8  # only the fast part counts


def test_rounded_keeps_two_significant_figures() -> None:
    assert [rounded(s) for s in (0.4, 7.6, 37.4, 123.0, 1234.0)] == [0.0, 8.0, 37.0, 120.0, 1200.0]


def test_in_flight_jobs_share_the_rate_until_the_shorter_ends() -> None:
    # At 10 audio s/s a 10 s clip beside a 900 s job: 10 + 10 = 20 s of work.
    assert eta_in_flight(10, [900], rate=10) == 2.0
    # The long job waits for the clip's 10 s too, then has the rate alone.
    assert eta_in_flight(900, [10], rate=10) == 91.0
    assert eta_in_flight(100, [], rate=10) == 10.0


def test_a_queued_job_waits_for_what_is_ahead_and_in_flight() -> None:
    assert eta_queued(10, ahead_s=30, in_flight_left=[60], rate=5) == 20.0


async def test_standings_read_the_queue_from_the_store(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:{tmp_path / 'db.sqlite'}")
    try:
        for job_id, duration in (("long", 900.0), ("q1", 60.0), ("q2", None), ("q3", 20.0)):
            new = NewJob(
                id=job_id,
                options=TranscribeOptions(),
                model="tiny.en",
                priority=0,
                file_path="/x",
                file_name="a.wav",
                file_sha256=job_id,
                file_size=1,
                duration=duration,
                max_attempts=2,
            )
            await store.create(new)
        claim = await store.claim(worker_id="w", prefer_models=[], lease_s=30)
        assert claim is not None and claim.job.id == "long"
        await store.add_chunks(claim, first=0, count=1, segments=[], processed_seconds=100)
        jobs = [await store.get(i) for i in ("long", "q1", "q2", "q3")]
        where = await standings(store, jobs, rate=10.0)
        assert where["long"] == Standing(0, 80.0)  # 800 s left alone, at 10 audio s/s
        assert where["q1"] == Standing(1, 86.0)  # (800 + 60) / 10
        assert where["q2"] == Standing(2, None)  # its length is unknown
        assert where["q3"] == Standing(3, 88.0)  # 800 + 60 + 0 + 20
        assert (await standings(store, jobs, rate=None))["q1"] == Standing(1, None)
        await store.finish(claim, Status.COMPLETED)
        done = await standings(store, [await store.get("long")], rate=10.0)
        assert done == {}  # a finished job stands nowhere
    finally:
        await store.close()
