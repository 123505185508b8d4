"""Where a job stands: the measured throughput and the estimates built on it
(service/standing.py). The clock is passed in, so these need no waiting."""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from sona.app import create_app
from sona.jobs import NewJob, Status, TranscribeOptions
from sona.progress import describe
from sona.standing import Standing, Throughput, eta_in_flight, eta_queued, rounded, standings
from sona.store import open_store
from tests.audio_factory import AUDIO, concat_wav
from tests.helpers import idle_app, poll, submit, wait_done
from tests.test_feed import conforms, next_event
from tests.test_job_events import sse


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
        assert where["long"] == Standing(None, 80.0)  # 800 s left alone, at 10 audio s/s
        assert where["q1"] == Standing(1, 86.0)  # (800 + 60) / 10
        assert where["q2"] == Standing(2, None)  # its length is unknown
        assert where["q3"] == Standing(3, 88.0)  # 800 + 60 + 0 + 20
        assert (await standings(store, jobs, rate=None))["q1"] == Standing(1, None)
        await store.finish(claim, Status.COMPLETED)
        done = await standings(store, [await store.get("long")], rate=10.0)
        assert done == {}  # a finished job stands nowhere
    finally:
        await store.close()


async def test_queued_jobs_show_their_place_in_the_api_and_the_feed(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    """No worker takes them (drained): positions follow submission order, more
    urgent first; no throughput is measured, so no ETA."""
    client = await idle_app(aiohttp_client, make_settings)
    spec = await (await client.get("/openapi.json")).json()
    first = await submit(client, fox_wav)
    second = await submit(client, fox_wav)
    urgent = await submit(client, fox_wav, priority="5")
    assert (second["queue_position"], urgent["queue_position"]) == (2, 1)  # the 202 says it
    for job, place in ((urgent, 1), (first, 2), (second, 3)):
        got = await (await client.get(f"/v1/jobs/{job['id']}")).json()
        assert (got["queue_position"], got["eta_s"]) == (place, None), got
        conforms(spec, "JobOut", got)
    resp = await client.get("/v1/events")
    await resp.content.readline()  # retry:
    snap = await next_event(sse(resp))
    places = {j["id"]: j["queue_position"] for j in snap.data["jobs"]}
    assert places == {urgent["id"]: 1, first["id"]: 2, second["id"]: 3}
    await client.delete(f"/v1/jobs/{urgent['id']}")
    got = await (await client.get(f"/v1/jobs/{first['id']}")).json()
    assert got["queue_position"] == 1  # moved up
    gone = await (await client.get(f"/v1/jobs/{urgent['id']}")).json()
    assert (gone["status"], gone["queue_position"], gone["eta_s"]) == ("cancelled", None, None)
    resp.close()


@pytest.mark.slow  # a real daemon or model for 10 s or more
async def test_eta_from_measured_throughput_and_a_realtime_factor_without_the_wait(
    aiohttp_client: Any, make_settings: Any, tmp_path: Path, manifest: dict[str, Any]
) -> None:
    """The real model: one job in flight at a time, so two clips wait queued
    behind a long file. Once the worker has measured its throughput, the waiting
    clips and the running job carry an ETA. The realtime factor (metrics, and
    the dashboard's, both from started_at) leaves the queued time out."""
    sentences = [AUDIO / name for name in manifest if name != "stereo.wav"]
    long_wav = concat_wav(sentences, tmp_path / "long.wav", gap_s=1.0, repeat=12)
    client = await aiohttp_client(create_app(make_settings(max_jobs_in_flight=1)))
    long = await submit(client, long_wav)
    await poll(client, long["id"], lambda j: j["processed_seconds"] > 0)
    a, b = await submit(client, AUDIO / "fox.wav"), await submit(client, AUDIO / "report.wav")
    seen_queued = time.time()
    got_b = await poll(client, b["id"], lambda j: j["eta_s"] is not None)
    got_a = await (await client.get(f"/v1/jobs/{a['id']}")).json()
    running = await (await client.get(f"/v1/jobs/{long['id']}")).json()
    assert got_b["status"] == "queued" and got_b["queue_position"] == 2, got_b
    assert got_a["status"] == "queued" and got_a["queue_position"] == 1, got_a
    assert got_a["eta_s"] > 0 and got_b["eta_s"] > 0 and running["eta_s"] > 0
    assert running["queue_position"] is None  # a worker has it
    # What `sona submit --wait` draws beside its bar (sona.progress).
    words = describe(got_a["status"], 0.0, got_a["duration"], got_a)
    assert "queue position 1" in words and "ETA " in words, words
    await client.delete(f"/v1/jobs/{long['id']}")
    done = [await wait_done(client, j["id"]) for j in (a, b)]
    rtfs = []
    for job in done:
        assert job["status"] == "completed" and job["eta_s"] is None, job
        started, finished = (stamp(job[k]) for k in ("started_at", "finished_at"))
        assert started >= seen_queued - 1, job  # the time it waited is not processing
        rtfs.append((finished - started) / job["duration"])
    metrics = await (await client.get("/metrics")).text()
    total = float(re.search(r"^sona_job_realtime_factor_sum (\S+)$", metrics, re.M)[1])  # type: ignore[index]
    assert abs(total - sum(rtfs)) < 0.01, (total, rtfs)


def stamp(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()
