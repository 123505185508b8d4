"""The worker on the real engine process: batches across jobs, cancel inside a
batch, leases on a timer, one transcript order, and a worker that outlives a
failing store (A3, A6, A8, A10, I3)."""

from __future__ import annotations

import asyncio
import os
import re
import time
import wave
from dataclasses import replace
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from sona.app import create_app
from sona.engine import ChunkInfo, ChunksReady, EngineConfig, JobSpec, Prepared
from sona.engine.host import ProcessEngineHost
from sona.engine.registry import ModelRegistry
from sona.errors import EngineCrashed
from sona.events import EventHub
from sona.jobs import NewJob, Segment, Status, TranscribeOptions
from sona.keys import ENGINE, STORE, WORKER
from sona.live_record import LiveRecording
from sona.notify import LocalNotifier, Notifier
from sona.store import open_store
from sona.store.sqlite import SqliteStore
from sona.uploads import UploadDir
from sona.worker import Worker
from sona.worker_config import WorkerConfig
from tests.audio_factory import flac_bomb
from tests.engine_double import EngineDouble, fake_job
from tests.helpers import audio_form, poll, submit, wait_done

AUDIO = Path(__file__).parent / "audio"
SHORT = ["fox.wav", "report.wav", "weather.wav", "numbers.wav", "meeting.wav"]


async def start(aiohttp_client: Any, make_settings: Any, **overrides: Any) -> TestClient:
    return await aiohttp_client(create_app(make_settings(**overrides)))


def word_error(reference: str, hypothesis: str) -> float:
    def words(text: str) -> str:
        return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())

    return float(jiwer.wer(words(reference), words(hypothesis)))


@pytest.mark.slow  # a real daemon or model for 10 s or more
async def test_short_jobs_submitted_together_share_batches(
    aiohttp_client: Any, make_settings: Any, manifest: dict[str, Any]
) -> None:
    """Short jobs share steps, and windows: each still gets its own words back.
    Context in a shared window can change a word (tiny.en hears "quick round
    fox" there), so accuracy is bounded, as the bench's row 2b measures it."""
    names = SHORT * 2
    # All at once from one client: more than the default per-client uploads.
    client = await start(aiohttp_client, make_settings, max_uploads_per_client=len(names))
    jobs = await asyncio.gather(*(submit(client, AUDIO / n) for n in names))
    done = [await wait_done(client, j["id"]) for j in jobs]
    errors = []
    for name, job in zip(names, done, strict=True):
        assert job["status"] == "completed", job
        errors.append(word_error(manifest[name]["text"], job["text"]))
        assert errors[-1] <= 0.3, (name, job["text"])
    assert sum(errors) / len(errors) <= 0.15, errors
    stats = client.app[WORKER].stats
    assert stats.most_jobs_in_a_step >= 2 and stats.steps < len(names)


@pytest.mark.slow  # a real daemon or model for 10 s or more
async def test_cancelling_one_job_of_a_batch_lets_the_others_complete(
    aiohttp_client: Any, make_settings: Any, long_wav: Path
) -> None:
    client = await start(aiohttp_client, make_settings, batch_size=3)
    jobs = [await submit(client, long_wav) for _ in range(3)]
    for j in jobs:  # all three claimed, their chunks in the pool
        await poll(client, j["id"], lambda x: x["status"] == "processing")
    victim = jobs[1]["id"]
    resp = await client.delete(f"/v1/jobs/{victim}")
    cancelled = await resp.json()
    assert resp.status == 200 and cancelled["status"] == "cancelled"
    others = [await wait_done(client, j["id"]) for j in (jobs[0], jobs[2])]
    assert [o["status"] for o in others] == ["completed", "completed"]
    assert others[0]["text"] == others[1]["text"]
    after = await (await client.get(f"/v1/jobs/{victim}")).json()
    # Nothing more was stored for it once it was cancelled.
    assert after["segments_done"] == cancelled["segments_done"] and after["progress"] < 1.0


async def test_a_short_lease_survives_a_steady_job_while_another_process_recovers(
    aiohttp_client: Any, make_settings: Any, long_wav: Path
) -> None:
    """Leases are renewed on a timer, not by engine output: another process's
    recovery, running all along, never takes the live job away."""
    client = await start(aiohttp_client, make_settings, lease_s=0.9, batch_size=1)
    job = await submit(client, long_wav)
    other = await open_store(make_settings().store_url)  # a second process's connection
    assert isinstance(other, SqliteStore)
    try:
        stolen: list[str] = []
        while (j := await (await client.get(f"/v1/jobs/{job['id']}")).json())["status"] in (
            "queued",
            "processing",
        ):
            stolen += (await other.recover(is_dead=lambda w: False)).requeued
            await asyncio.sleep(0.2)
    finally:
        await other.close()
    assert stolen == [] and j["status"] == "completed" and j["attempts"] == 1


async def test_stereo_reads_the_same_in_every_format(
    aiohttp_client: Any, make_settings: Any
) -> None:
    client = await start(aiohttp_client, make_settings)
    job = await wait_done(
        client, (await submit(client, AUDIO / "stereo.wav", diarize="channels"))["id"]
    )
    url = f"/v1/jobs/{job['id']}/transcript?format="
    text = (await (await client.get(url + "text")).text()).strip()
    as_json = (await (await client.get(url + "json")).json())["text"]
    verbose = await (await client.get(url + "verbose_json")).json()
    assert job["text"] == text == as_json == verbose["text"]
    assert text.lower().index("morning") < text.lower().index("right")  # left spoke first
    starts = [s["start"] for s in verbose["segments"]]
    assert starts == sorted(starts) and {s["speaker"] for s in verbose["segments"]} == {
        "left",
        "right",
    }
    srt = await (await client.get(url + "srt")).text()
    assert srt.index("[left]") < srt.index("[right]")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.mark.slow  # a long real-model run
async def test_r14_lying_header_flac_bombs_leave_memory_where_it_was(
    aiohttp_client: Any, make_settings: Any, tmp_path: Path
) -> None:
    """An hour of silence whose header says 5 s: decoded as a stream and stopped
    by the sample counter at the limit, so neither process keeps what it read."""
    client = await start(aiohttp_client, make_settings, max_audio_seconds=600)
    bomb = flac_bomb(tmp_path / "bomb.flac", 3600, claims_s=5)

    async def explode() -> None:
        job = await wait_done(client, (await submit(client, bomb))["id"])
        assert job["status"] == "failed" and job["error"]["code"] == "audio_too_long", job

    await explode()  # warm: models, VAD, allocator pools
    engine = client.app[ENGINE].pid
    assert engine is not None
    before = rss_mb(engine), rss_mb(os.getpid())
    for _ in range(10):
        await explode()
    after = rss_mb(engine), rss_mb(os.getpid())
    # Each bomb decodes 600 s (38 MB of samples); ten kept would be 380 MB.
    assert after[0] - before[0] < 40 and after[1] - before[1] < 40, (before, after)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for {pid}")


async def test_r31_sequential_mode_stops_at_its_limit_whatever_the_header_says(
    aiohttp_client: Any, make_settings: Any, tmp_path: Path, fox_wav: Path
) -> None:
    """Sequential mode holds the whole file in memory: an hour of silence whose
    header says 5 s is stopped by the sample counter at max_sequential_seconds,
    and the engine's peak memory barely moves (the hour would be 230 MB of
    samples, twice over while joined, before faster-whisper's own copies)."""
    client = await start(aiohttp_client, make_settings, max_sequential_seconds=60)
    warm = await submit(client, fox_wav, condition_on_previous_text="true")
    assert (await wait_done(client, warm["id"]))["status"] == "completed"
    engine = client.app[ENGINE].pid
    assert engine is not None
    before = peak_rss_mb(engine)
    bomb = flac_bomb(tmp_path / "bomb.flac", 3600, claims_s=5)
    job = await submit(client, bomb, condition_on_previous_text="true")
    job = await wait_done(client, job["id"])
    assert job["status"] == "failed" and job["error"]["code"] == "audio_too_long", job
    assert "condition_on_previous_text" in job["error"]["message"]
    assert peak_rss_mb(engine) - before < 100, (before, peak_rss_mb(engine))


class FlakyStore:
    """A real store whose ``method`` fails ``failures`` times, as on a full disk."""

    def __init__(self, store: SqliteStore, method: str, failures: int) -> None:
        self._store = store
        self._method = method
        self.failures = failures

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._store, name)
        if name != self._method:
            return real

        async def flaky(*args: Any, **kw: Any) -> Any:
            if self.failures > 0:
                self.failures -= 1
                raise OSError(28, "No space left on device")
            return await real(*args, **kw)

        return flaky


# Loops that retry a failed write with backoff; the others let the job go to
# recovery, which re-runs it (resuming after what was stored).
RETRIED = {"claim", "recover", "heartbeat"}


@pytest.mark.parametrize(
    "method", ["claim", "recover", "heartbeat", "set_info", "add_chunks", "finish"]
)
async def test_r17_the_worker_outlives_store_errors_and_resumes(
    tmp_path: Path, fox_wav: Path, method: str
) -> None:
    """Store writes fail (at claim, in the idle loop's recovery, renewing a lease,
    recording the decoded duration, storing segments, finishing); the worker
    keeps running and the job completes once they work (RELIABILITY 17)."""
    store = await SqliteStore.open(str(tmp_path / "db.sqlite"))
    flaky = FlakyStore(store, method, failures=3)
    engine = ProcessEngineHost(EngineConfig(device="cpu"))
    await engine.start()
    models = ModelRegistry(engine, model_dir=tmp_path, allow_download=False, max_loaded=1)
    worker = Worker(
        flaky,  # type: ignore[arg-type]
        models,
        engine,
        EventHub(),
        # A lease shorter than starting the engine and loading the model: it must
        # be renewed from the claim on. A job let go after a failed write is
        # recovered soon.
        WorkerConfig(max_audio_seconds=600, poll_interval_s=0.05, lease_s=0.5),
        LocalNotifier(),
    )
    task = asyncio.create_task(worker.run())
    try:
        await store.create(
            NewJob(
                id="after-the-disk-fills",
                options=TranscribeOptions(model="tiny.en"),
                model="tiny.en",
                priority=0,
                file_path=str(fox_wav),
                file_name="fox.wav",
                file_sha256="x",
                file_size=1,
                duration=7.0,
                max_attempts=3,
            )
        )
        worker.wake()
        deadline = time.monotonic() + 120
        while (job := await store.get("after-the-disk-fills")).status != Status.COMPLETED:
            assert worker.running and not task.done(), "the worker ended"
            assert time.monotonic() < deadline, job
            await asyncio.sleep(0.1)
        assert flaky.failures == 0 and "fox" in job.text.lower() and job.crashes == 0
        # Back to running once each failed loop's backoff is out (the job may
        # complete within the last one: fox.wav decodes in under a second).
        while worker.state != "running":
            assert time.monotonic() < deadline and worker.state == "retrying", worker.state
            await asyncio.sleep(0.05)
        if method in RETRIED:
            assert worker.loop_failures >= 3  # each one logged and retried
        else:  # each failed write let the job go to recovery: three re-runs
            assert job.attempts == 4, job
        if method in ("claim", "recover"):
            assert job.attempts == 1, job
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await engine.stop()
        await store.close()


def run_worker(
    store: Any,
    engine: EngineDouble,
    tmp_path: Path,
    notifier: Notifier | None = None,
    **config: Any,
) -> tuple[Worker, asyncio.Task[None]]:
    """A worker on ``store`` and an engine double, running; ``notifier``: what
    it announces the jobs it queues to (by default no one: it polls)."""
    models = ModelRegistry(engine, model_dir=tmp_path, allow_download=False, max_loaded=1)
    settings = WorkerConfig(max_audio_seconds=600, poll_interval_s=0.05, **config)
    notifier = notifier or LocalNotifier()
    worker = Worker(store, models, engine, EventHub(), settings, notifier)  # type: ignore[arg-type]
    return worker, asyncio.create_task(worker.run())


async def completed(store: SqliteStore, job_id: str, task: asyncio.Task[None]) -> Any:
    deadline = time.monotonic() + 60
    while (job := await store.get(job_id)).status != Status.COMPLETED:
        assert time.monotonic() < deadline and not task.done(), job
        await asyncio.sleep(0.05)
    return job


class HeldStepEngine(EngineDouble):
    """A test double for the race below: one chunk per job. The first step says
    the first claim's file is decoded (its ``Prepared``, whose write then fails)
    and is held until released; it answers ``[]``, as the engine does for a job
    closed mid-step. Later steps decode."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.steps = 0
        self.opened: list[str] = []

    def open(self, spec: JobSpec) -> None:
        self.opened.append(spec.token)
        chunk = ChunkInfo(spec.job_id, 0, 0, 0.0, 1.0, 1.0)
        self.events.put_nowait(ChunksReady(spec.job_id, [chunk], "en", spec.token))
        if len(self.opened) > 1:
            self.events.put_nowait(Prepared(spec.job_id, 1.0, 1, spec.token))

    async def step(self, model_id: str, items: list[ChunkInfo]) -> list[list[Segment]]:
        self.steps += 1
        if self.steps == 1:
            self.events.put_nowait(Prepared(items[0].job_id, 1.0, 1, self.opened[0]))
            await self.release.wait()
            return [[] for _ in items]
        return [[Segment(index=0, start=0.0, end=1.0, text=" decoded")] for _ in items]


async def test_a_step_that_ends_after_its_job_was_let_go_is_not_the_next_claims(
    tmp_path: Path,
) -> None:
    """A write fails mid-step (the job is let go), recovery hands the job to a
    new claim, then the step ends: its (empty) result belonged to the old claim
    and must not be stored as the new one's chunk 0."""
    store = await SqliteStore.open(str(tmp_path / "db.sqlite"))
    flaky = FlakyStore(store, "set_info", failures=1)
    engine = HeldStepEngine()
    worker, task = run_worker(flaky, engine, tmp_path, lease_s=0.5)
    try:
        await store.create(fake_job("let-go", duration=1.0))
        worker.wake()
        deadline = time.monotonic() + 60
        while len(engine.opened) < 2:  # let go, recovered, claimed again
            assert time.monotonic() < deadline and not task.done()
            await asyncio.sleep(0.05)
        engine.release.set()
        job = await completed(store, "let-go", task)
        assert job.text == "decoded", job
        assert job.attempts == 2, job
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()


def cut_all(engine: EngineDouble, spec: JobSpec, count: int) -> None:
    """``engine`` announces ``spec``'s job as ``count`` chunks of 15 s, 20 s
    apart (no two share a 20 s window: each is a step's row of its own),
    every one cut at once."""
    chunks = [ChunkInfo(spec.job_id, n, 0, n * 20.0, n * 20.0 + 15, 15.0) for n in range(count)]
    engine.events.put_nowait(ChunksReady(spec.job_id, chunks, "en", spec.token))
    engine.events.put_nowait(Prepared(spec.job_id, 20.0 * count, count, spec.token))


class OutOfOrderEngine(EngineDouble):
    """A test double: one job of three chunks, each a step of its own. With
    ``hold_first`` the step of chunk 0 ends only after those of chunks 1 and 2
    have, which it can only do if the worker runs steps in parallel."""

    def __init__(self, hold_first: bool) -> None:
        super().__init__()
        self.hold_first = hold_first
        self.others_done = asyncio.Event()
        self.ended: list[int] = []

    def open(self, spec: JobSpec) -> None:
        cut_all(self, spec, 3)  # with batch_size=1, each a step of its own

    async def step(self, model_id: str, items: list[ChunkInfo]) -> list[list[Segment]]:
        [item] = items
        if item.no == 0 and self.hold_first:
            await asyncio.wait_for(self.others_done.wait(), 30)
        self.ended.append(item.no)
        if {1, 2} <= set(self.ended):
            self.others_done.set()
        words = ("zero", "one", "two")
        return [[Segment(index=0, start=item.start, end=item.end, text=f" {words[item.no]}")]]


class StepSizesEngine(EngineDouble):
    """A test double: one job of five 15 s chunks (no two share a window), all
    cut at once; it records how many chunks each step holds."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def open(self, spec: JobSpec) -> None:
        cut_all(self, spec, 5)

    async def step(self, model_id: str, items: list[ChunkInfo]) -> list[list[Segment]]:
        self.sizes.append(len(items))
        await asyncio.sleep(0.05 * len(items))  # a step costs what its windows do
        return [[Segment(index=0, start=i.start, end=i.end, text=f" {i.no}")] for i in items]


async def test_a_job_s_last_chunks_are_shared_out_among_the_parallel_steps(
    tmp_path: Path,
) -> None:
    """Five chunks, every one cut, steps of 4 on two replicas: the first step
    takes 3 and the rest go one at a time to whichever step is free, rather
    than 4 on one replica and 1 on the other (which then idles)."""
    store = await SqliteStore.open(str(tmp_path / "db.sqlite"))
    engine = StepSizesEngine()
    worker, task = run_worker(store, engine, tmp_path, batch_size=4, parallel_steps=2)
    try:
        await store.create(fake_job("five", duration=100.0))
        worker.wake()
        job = await completed(store, "five", task)
        assert engine.sizes == [3, 1, 1], engine.sizes
        assert job.text == "0 1 2 3 4", job
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()


class SlowFirstWrite:
    """A real store whose first ``add_chunks`` waits for ``go``: later chunks are
    decoded while the first write is under way."""

    def __init__(self, store: SqliteStore, go: asyncio.Event) -> None:
        self._store, self._go, self._first = store, go, True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def add_chunks(self, *args: Any, **kw: Any) -> Any:
        if self._first:
            self._first = False
            await asyncio.wait_for(self._go.wait(), 30)
        return await self._store.add_chunks(*args, **kw)


@pytest.mark.parametrize("late", ["step", "write"])
async def test_steps_in_parallel_that_end_out_of_order_store_a_job_in_order(
    tmp_path: Path, late: str
) -> None:
    """Two steps at once: chunk 0's step ends last, or first but its write is
    still under way when chunks 1 and 2 are decoded. Either way the job's
    segments are stored in order, and all of them."""
    store = await SqliteStore.open(str(tmp_path / "db.sqlite"))
    engine = OutOfOrderEngine(hold_first=late == "step")
    writes = SlowFirstWrite(store, engine.others_done) if late == "write" else store
    worker, task = run_worker(writes, engine, tmp_path, batch_size=1, parallel_steps=2)
    try:
        await store.create(fake_job("three", duration=60.0))
        worker.wake()
        job = await completed(store, "three", task)
        assert engine.ended[-1 if late == "step" else 0] == 0
        assert job.text == "zero one two", job
        assert [s.text for s in await store.segments("three")] == [" zero", " one", " two"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()


async def test_a_timed_out_request_is_a_504_timeout_not_an_engine_error(
    aiohttp_client: Any, make_settings: Any, long_wav: Path
) -> None:
    client = await start(aiohttp_client, make_settings, job_timeout_s=1, lease_s=0.9)
    resp = await client.post("/v1/audio/transcriptions", data=audio_form(long_wav))
    body = await resp.json()
    assert resp.status == 504 and body["error"]["code"] == "timeout", body
    assert resp.headers["x-should-retry"] == "false"
    jobs = (await (await client.get("/v1/jobs")).json())["data"]
    assert jobs[0]["status"] == "failed" and jobs[0]["error"]["code"] == "timeout"


async def test_a_job_whose_upload_vanished_fails_instead_of_sticking(
    aiohttp_client: Any, make_settings: Any, long_wav: Path
) -> None:
    """Both ways a claim reads the file: the header probe (channel split) and the
    engine's decode. Neither may leave the job processing."""
    client = await start(aiohttp_client, make_settings, max_jobs_in_flight=1)
    blocker = await submit(client, long_wav)
    jobs = [
        await submit(client, AUDIO / "stereo.wav", diarize="channels"),
        await submit(client, AUDIO / "report.wav"),
    ]
    for job in jobs:  # still queued behind the blocker: take their files away
        stored = await client.app[STORE].get(job["id"])
        await asyncio.to_thread(Path(stored.file_path).unlink)
    assert (await wait_done(client, blocker["id"]))["status"] == "completed"
    for job in jobs:
        done = await wait_done(client, job["id"])
        assert done["status"] == "failed" and done["error"]["code"] == "invalid_audio", done
    assert client.app[WORKER].running and not client.app[WORKER].flights


class LoadCrashEngine(EngineDouble):
    """A test double whose first model load dies with the engine (as a child
    killed mid-load does); later loads work and every job is one chunk."""

    def __init__(self) -> None:
        super().__init__()
        self.loads = 0

    async def load(self, model_id: str, path: Path) -> None:
        self.loads += 1
        if self.loads == 1:
            raise EngineCrashed("the engine process died (signal SIGKILL)")

    def open(self, spec: JobSpec) -> None:
        chunk = ChunkInfo(spec.job_id, 0, 0, 0.0, 1.0, 1.0)
        self.events.put_nowait(ChunksReady(spec.job_id, [chunk], "en", spec.token))
        self.events.put_nowait(Prepared(spec.job_id, 1.0, 1, spec.token))

    async def step(self, model_id: str, items: list[ChunkInfo]) -> list[list[Segment]]:
        return [[Segment(index=0, start=0.0, end=1.0, text=" decoded")] for _ in items]


async def test_r30_an_engine_death_during_the_model_load_is_retried_not_failed(
    tmp_path: Path,
) -> None:
    """The claim that waited on the load is requeued with the crash counted (as
    a death mid-job is) and completes on its next attempt."""
    store = await SqliteStore.open(str(tmp_path / "db.sqlite"))
    engine = LoadCrashEngine()
    worker, task = run_worker(store, engine, tmp_path)
    try:
        await store.create(fake_job("loading"))
        worker.wake()
        job = await completed(store, "loading", task)
        assert (job.attempts, job.crashes, engine.loads) == (2, 1, 2), job
        assert job.text == "decoded"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()


class DetectingEngine(EngineDouble):
    """Detects German (0.93) on every job: one chunk announced with it, or —
    as for a resume whose chunks were all stored — none, the language coming
    with ``Prepared`` alone."""

    def __init__(self, *, announce: bool) -> None:
        super().__init__()
        self.announce = announce
        self.opened: list[JobSpec] = []

    def open(self, spec: JobSpec) -> None:
        self.opened.append(spec)
        if self.announce:
            chunk = ChunkInfo(spec.job_id, 0, 0, 0.0, 1.0, 1.0)
            self.events.put_nowait(ChunksReady(spec.job_id, [chunk], "de", spec.token, 0.93))
        total = 1 if self.announce else 0
        prepared = Prepared(spec.job_id, 1.0, total, spec.token, (), "de", 0.93)
        self.events.put_nowait(prepared)

    async def step(self, model_id: str, items: list[ChunkInfo]) -> list[list[Segment]]:
        return [[Segment(index=0, start=0.0, end=1.0, text=" hallo")] for _ in items]


@pytest.mark.parametrize("announce", [True, False])
async def test_a_detected_language_and_its_probability_are_stored(
    tmp_path: Path, announce: bool
) -> None:
    store = await SqliteStore.open(str(tmp_path / "db.sqlite"))
    engine = DetectingEngine(announce=announce)
    worker, task = run_worker(store, engine, tmp_path)
    try:
        job = fake_job("detected")
        await store.create(replace(job, options=TranscribeOptions(model="tiny.en")))
        worker.wake()
        done = await completed(store, "detected", task)
        assert (done.language, done.language_probability) == ("de", 0.93)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()


async def test_a_job_s_vad_options_reach_the_engine_on_every_run(tmp_path: Path) -> None:
    """Stored with the job, they are in the spec each claim opens the engine
    with: a resume cuts the same chunks as the first run."""
    store = await SqliteStore.open(str(tmp_path / "db.sqlite"))
    engine = DetectingEngine(announce=True)
    worker, task = run_worker(store, engine, tmp_path)
    try:
        vad = TranscribeOptions(model="tiny.en", vad_threshold=0.7, min_silence_duration_ms=500)
        await store.create(replace(fake_job("tuned"), options=vad))
        worker.wake()
        await completed(store, "tuned", task)
        spec = engine.opened[0]
        assert (spec.options.vad_threshold, spec.options.min_silence_duration_ms) == (0.7, 500)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()


class TailEngine(EngineDouble):
    """A test double for a live session's job requeued after its daemon died:
    like the engine given ``from_s``, it cuts one chunk after the stored turns,
    numbered on from theirs (or, with ``tail`` off, none: the turns covered
    everything), and detects no language when it cuts nothing."""

    def __init__(self, *, tail: bool) -> None:
        super().__init__()
        self.tail = tail
        self.opened: list[JobSpec] = []

    def open(self, spec: JobSpec) -> None:
        self.opened.append(spec)
        at, total = spec.from_s or 0.0, spec.skip_chunks
        if self.tail:
            chunk = ChunkInfo(spec.job_id, total, 0, at + 0.5, at + 2.0, 1.5)
            self.events.put_nowait(ChunksReady(spec.job_id, [chunk], "en", spec.token, 0.9))
            total += 1
        language = "en" if self.tail else None
        self.events.put_nowait(Prepared(spec.job_id, at + 3.0, total, spec.token, (), language))

    async def step(self, model_id: str, items: list[ChunkInfo]) -> list[list[Segment]]:
        return [[Segment(index=0, start=i.start, end=i.end, text=" tail")] for i in items]


async def abandoned(store: Any, rec: LiveRecording) -> None:
    """The session's daemon is gone: nobody renews its job's lease, and
    recovery (as another node's would) requeues the job."""
    rec._keeper.cancel()
    await asyncio.sleep(0.5)  # past its 0.3 s lease
    assert (await store.recover(is_dead=lambda _owner: False)).requeued == [rec.job_id]


@pytest.mark.parametrize("tail", [True, False], ids=["speech-after", "all-covered"])
async def test_a_requeued_live_job_goes_on_after_its_turns_as_a_file_job(
    store: Any, tmp_path: Path, tail: bool
) -> None:
    """A live session stores two turns, then its daemon dies (its lease keeper
    stops); recovery requeues the job as another node's would, and a worker
    finishes it: the WAV sealed, the engine asked for the audio after the last
    turn's end with chunk numbers after the turns', segments numbered on from
    theirs, the turns' language kept when nothing follows them."""
    uploads = UploadDir(tmp_path / "uploads")
    rec = await LiveRecording.open(
        store=store,
        events=EventHub(),
        notifier=LocalNotifier(),
        uploads=uploads,
        session_id="sess_1",
        model_id="tiny.en",
        options=TranscribeOptions(model="tiny.en"),
        lease_s=0.3,
        max_attempts=3,
    )
    await asyncio.to_thread(rec.append, np.zeros(4 * 16_000, np.float32))
    await rec.turn(0, (0.0, 1.5), [Segment(index=0, start=0.2, end=1.1, text=" one")], "en")
    await rec.turn(1, (1.5, 2.5), [Segment(index=0, start=0.1, end=0.7, text=" two")], None)
    mid = await store.get(rec.job_id)  # processed: the turn's end, not its last word's
    assert (mid.processed_seconds, mid.language, mid.duration) == (2.5, "en", None)
    await abandoned(store, rec)
    engine = TailEngine(tail=tail)
    worker, task = run_worker(store, engine, tmp_path)
    try:
        worker.wake()
        job = await completed(store, rec.job_id, task)
        [spec] = engine.opened
        assert (spec.from_s, spec.skip_chunks) == (2.5, 2)
        segments = await store.segments(rec.job_id)
        said = [" one", " two", " tail"] if tail else [" one", " two"]
        assert [s.text for s in segments] == said
        assert [s.index for s in segments] == list(range(len(said)))
        assert (job.chunks_done, job.language, job.duration) == (len(said), "en", 5.5)
        assert (job.attempts, job.max_attempts) == (2, 3)  # a crash in its re-run is retried
        with wave.open(str(rec.path)) as w:  # sealed: the header says what is there
            assert w.getnframes() == 4 * 16_000
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class AnnouncedJobs(LocalNotifier):
    """The jobs announced as queued (to every node's workers, with PostgreSQL)."""

    def __init__(self) -> None:
        super().__init__()
        self.queued: list[str] = []

    async def job_queued(self, job_id: str) -> None:
        self.queued.append(job_id)
        await super().job_queued(job_id)


async def abandoned_refining_session(
    store: Any, tmp_path: Path, options: TranscribeOptions
) -> LiveRecording:
    """A live session with a refine model that stored one turn of its 4 s
    recording, and whose daemon then died (its job requeued)."""
    rec = await LiveRecording.open(
        store=store,
        events=EventHub(),
        notifier=LocalNotifier(),
        uploads=UploadDir(tmp_path / "uploads"),
        session_id="sess_1",
        model_id="tiny.en",
        options=options,
        lease_s=0.3,
        max_attempts=3,
        refine_model="tiny.en",
    )
    await asyncio.to_thread(rec.append, np.zeros(4 * 16_000, np.float32))
    await rec.turn(0, (0.0, 1.5), [Segment(index=0, start=0.2, end=1.1, text=" one")], "en")
    await abandoned(store, rec)
    return rec


async def test_a_requeued_live_job_queues_its_second_pass_as_the_worker_completes_it(
    store: Any, tmp_path: Path
) -> None:
    """A live session with a refine model whose daemon died: the worker that
    finishes it (its tail transcribed first) queues the second pass in the
    write that completes it — over a link of the sealed WAV, with the options
    the job stored — then runs it, and its transcript replaces the job's."""
    stored = TranscribeOptions(language="en", prompt="as the session opened")
    rec = await abandoned_refining_session(store, tmp_path, stored)
    engine = TailEngine(tail=True)
    notifier = AnnouncedJobs()
    worker, task = run_worker(store, engine, tmp_path, notifier)
    try:
        worker.wake()
        job = await completed(store, rec.job_id, task)
        second_id = job.metadata["refined_by"]
        assert notifier.queued == [second_id]  # every node's workers hear of it
        second = await completed(store, second_id, task)
        live_spec, second_spec = engine.opened  # the tail first, then the whole file
        assert (live_spec.from_s, second_spec.from_s) == (1.5, None)
        assert second.refines == rec.job_id and second.priority == 0
        assert second.options == stored.model_copy(update={"model": "tiny.en"})
        assert (second.max_attempts, second.callback_url) == (3, None)
        linked = Path(second.file_path)
        assert linked != rec.path
        # A hard link (one deletion keeps the other's audio) of the sealed WAV.
        assert await asyncio.to_thread(os.path.samefile, linked, rec.path)
        with wave.open(str(linked)) as w:
            assert w.getnframes() == 4 * 16_000
        refined = await store.get(rec.job_id)
        assert [s.text for s in await store.segments(rec.job_id)] == [" tail"]
        assert refined.text == second.text and refined.chunks_done == 2  # turn + tail
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class RecordingLostEngine(TailEngine):
    """As ``TailEngine``, but the session's recording is deleted as the job
    opens (after the opener sealed it): by hand, or a volume lost."""

    def open(self, spec: JobSpec) -> None:
        spec.path.unlink()
        super().open(spec)


async def test_a_requeued_live_job_whose_recording_is_gone_completes_without_its_second_pass(
    store: Any, tmp_path: Path
) -> None:
    """The second pass needs the recording; without it the job still completes
    once, with its turns and tail, and queues nothing (building the pass used
    to fail the job's end, which recovery then retried without bound)."""
    rec = await abandoned_refining_session(store, tmp_path, TranscribeOptions(model="tiny.en"))
    engine = RecordingLostEngine(tail=True)
    worker, task = run_worker(store, engine, tmp_path)
    try:
        worker.wake()
        job = await completed(store, rec.job_id, task)
        assert [s.text for s in await store.segments(rec.job_id)] == [" one", " tail"]
        assert "refined_by" not in job.metadata and job.attempts == 2
        assert await store.queue_size() == 0 and len(engine.opened) == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_file_job_naming_a_refine_model_in_its_metadata_gets_no_second_pass(
    store: Any, tmp_path: Path
) -> None:
    """``refine_model`` in a user's metadata is the user's: only a live
    session's job (a metadata key the intake reserves) has a second pass."""
    await store.create(replace(fake_job("file"), metadata={"refine_model": "tiny.en"}))
    worker, task = run_worker(store, TailEngine(tail=True), tmp_path)
    try:
        worker.wake()
        job = await completed(store, "file", task)
        assert job.metadata == {"refine_model": "tiny.en"}  # no refined_by
        assert await store.queue_size() == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
