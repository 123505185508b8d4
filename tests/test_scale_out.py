"""Scale-out on real PostgreSQL with the real model (H1–H2, RELIABILITY 8–9): one
API node (`sona serve --no-worker`) and two `sona worker` processes share a
schema and an upload directory. The processes live for the whole module; the
tests that kill or stop a worker start a replacement, so each begins with two.

Leases are short here (SONA_LEASE_S) so that takeovers happen within the test;
every wait is a generous bound on progress, never a timing claim."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
import wave
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.conftest import REPO, Daemon, start_daemon
from tests.helpers import audio_form
from tests.pg import PG_BASE, pg_reachable
from tests.test_job_events import sse

# A PostgreSQL cluster of real processes: minutes on two cores (pytest -m 'not slow').
pytestmark = pytest.mark.slow

LEASE_S = 6
ENV = {"SONA_POLL_INTERVAL_S": "0.2", "SONA_LEASE_S": str(LEASE_S), "SONA_LOG_LEVEL": "info"}
BOUND_S = 180  # a generous bound for any one thing to happen on a loaded machine
# RELIABILITY 8 asks 1000; 200 (the figure) keeps CI within its budget.
MANY = int(os.environ.get("SONA_TEST_MANY_JOBS", "200"))


@dataclass
class WorkerProc:
    proc: subprocess.Popen[str]
    worker_id: str
    stderr_path: Path
    port: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.stderr_path.read_text()

    def events(self, name: str) -> list[dict[str, Any]]:
        """Its JSON log lines whose event is ``name``."""
        lines = [json.loads(ln) for ln in self.log().splitlines() if ln.startswith("{")]
        return [ln for ln in lines if ln.get("event") == name]


@dataclass
class Cluster:
    url: str
    shared: Path
    api: Daemon
    workers: list[WorkerProc] = field(default_factory=list)

    def start_worker(self) -> WorkerProc:
        err_path = self.shared.parent / f"worker-{uuid.uuid4().hex[:6]}.log"
        with err_path.open("w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "sona", "worker", "--store", self.url]
                + ["--data-dir", str(self.shared), "--model", "tiny.en", "--port", "0"],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                cwd=REPO,
                env={**os.environ, **ENV},
            )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, f"worker exited before ready: {err_path.read_text()[-3000:]}"
        ready = json.loads(line)
        assert ready["role"] == "worker" and ready["port"]
        worker = WorkerProc(proc, ready["worker_id"], err_path, ready["port"])
        self.workers.append(worker)
        return worker

    def live(self) -> list[WorkerProc]:
        return [w for w in self.workers if w.proc.poll() is None]

    def by_id(self, worker_id: str) -> WorkerProc:
        return next(w for w in self.workers if w.worker_id == worker_id)

    def keep_two(self) -> None:
        while len(self.live()) < 2:
            self.start_worker()

    async def row(self, job_id: str) -> asyncpg.Record:
        conn = await asyncpg.connect(self.url)
        try:
            return await conn.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
        finally:
            await conn.close()

    async def segments(self, job_id: str) -> list[tuple[int, str]]:
        conn = await asyncpg.connect(self.url)
        try:
            rows = await conn.fetch(
                "SELECT idx, text FROM segments WHERE job_id = $1 ORDER BY idx", job_id
            )
        finally:
            await conn.close()
        return [(r["idx"], r["text"]) for r in rows]


def _schema(action: str, schema: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(PG_BASE)
        await conn.execute(f'{action} SCHEMA "{schema}"' + (" CASCADE" if "DROP" in action else ""))
        await conn.close()

    asyncio.run(go())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if reason := pg_reachable():
        pytest.skip(reason)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    _schema("CREATE", schema)
    root = tmp_path_factory.mktemp("scale")
    shared = root / "shared"
    url = f"{PG_BASE}?search_path={schema}"
    api = start_daemon(shared, "--store", url, "--no-worker", env=ENV)
    c = Cluster(url, shared, api)
    try:
        c.keep_two()
        yield c
    finally:
        for proc in [api.proc, *(w.proc for w in c.workers)]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            proc.wait(30)
            if proc.stdout:
                proc.stdout.close()
        _schema("DROP", schema)


@pytest.fixture
async def http(cluster: Cluster) -> AsyncIterator[aiohttp.ClientSession]:
    cluster.keep_two()
    async with aiohttp.ClientSession(cluster.api.url) as session:
        yield session


async def submit(http: aiohttp.ClientSession, path: Path) -> dict[str, Any]:
    async with http.post("/v1/jobs", data=audio_form(path, filename=path.name)) as resp:
        assert resp.status == 202, await resp.text()
        return await resp.json()


async def wait_for(http: aiohttp.ClientSession, job_id: str, until: Any) -> dict[str, Any]:
    deadline = time.monotonic() + BOUND_S
    while True:
        async with http.get(f"/v1/jobs/{job_id}") as resp:
            job = await resp.json()
        if until(job):
            return job
        assert time.monotonic() < deadline, f"no progress within {BOUND_S} s: {job}"
        await asyncio.sleep(0.05)


def finished(job: dict[str, Any]) -> bool:
    return job["status"] in ("completed", "failed", "cancelled")


async def wait_log(worker: WorkerProc, needle: str) -> None:
    deadline = time.monotonic() + BOUND_S
    while needle not in worker.log():
        assert time.monotonic() < deadline, f"{needle!r} never logged: {worker.log()[-2000:]}"
        await asyncio.sleep(0.2)


async def test_each_node_reports_its_role(http: aiohttp.ClientSession, cluster: Cluster) -> None:
    async with http.get("/ready") as resp:
        assert resp.status == 200
        assert (await resp.json())["role"] == "api"
    # An API node has no engine: loading a model there is refused, not attempted.
    async with http.post("/v1/models/load", json={"model": "tiny.en"}) as resp:
        assert resp.status == 409
        assert (await resp.json())["error"]["code"] == "no_engine"
    worker = cluster.live()[0]
    async with aiohttp.ClientSession() as probe:
        async with probe.get(f"http://127.0.0.1:{worker.port}/health") as resp:
            body = await resp.json()
        assert resp.status == 200 and body["status"] == "ok"
        assert body["worker_id"] == worker.worker_id and body["models"] == ["tiny.en"]
        async with probe.get(f"http://127.0.0.1:{worker.port}/metrics") as resp:
            scrape = await resp.text()
        assert resp.status == 200 and 'sona_model_loaded{model="tiny.en"} 1.0' in scrape


async def test_sse_on_the_api_node_shows_a_workers_segments(
    http: aiohttp.ClientSession, cluster: Cluster, fox_wav: Path
) -> None:
    job = await submit(http, fox_wav)
    async with http.get(f"/v1/jobs/{job['id']}/events") as resp:
        assert resp.status == 200
        async with asyncio.timeout(BOUND_S):
            events = [e async for e in sse(resp)]
    kinds = [e.event for e in events]
    assert kinds[-1] == "completed"
    streamed = "".join(e.data["text"] for e in events if e.event == "segment")
    assert "fox" in streamed.lower()
    row = await cluster.row(job["id"])
    assert row["worker_id"] in {w.worker_id for w in cluster.workers}
    assert streamed.strip() == row["text"]


async def test_cancel_at_the_api_node_stops_the_job_on_its_worker(
    http: aiohttp.ClientSession, cluster: Cluster, longer_wav: Path
) -> None:
    job = await submit(http, longer_wav)
    await wait_for(http, job["id"], lambda j: j["segments_done"] > 0 or finished(j))
    at_cancel = (await cluster.row(job["id"]))["chunks_done"]
    async with http.delete(f"/v1/jobs/{job['id']}") as resp:
        assert resp.status == 200, await resp.text()
    done = await wait_for(http, job["id"], finished)
    assert done["status"] == "cancelled"
    row = await cluster.row(job["id"])
    worker = cluster.by_id(row["worker_id"])
    await wait_log(worker, "job.finished")
    # The steps in flight when the cancel came at most (two steps of 4 chunks on
    # a CPU). The job has more chunks than that left, so a cancel that only the
    # lease heartbeat noticed (every LEASE_S/3) would show as more.
    assert row["chunks_done"] - at_cancel <= 8
    assert done["progress"] < 1.0


async def test_killed_worker_job_finishes_on_the_other_resuming(
    http: aiohttp.ClientSession, cluster: Cluster, longer_wav: Path
) -> None:
    job = await submit(http, longer_wav)
    await wait_for(http, job["id"], lambda j: j["segments_done"] > 0 or finished(j))
    row = await cluster.row(job["id"])
    assert row["status"] == "processing", "the job finished before it could be killed"
    victim = cluster.by_id(row["worker_id"])
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(30)
    kept = await cluster.segments(job["id"])  # what the dead worker had stored
    kept_chunks = (await cluster.row(job["id"]))["chunks_done"]
    assert kept and kept_chunks > 0
    done = await wait_for(http, job["id"], finished)
    assert done["status"] == "completed"
    row = await cluster.row(job["id"])
    assert row["worker_id"] != victim.worker_id and row["attempts"] == 2 and row["crashes"] == 0
    survivor = cluster.by_id(row["worker_id"])
    claimed = [e for e in survivor.events("job.claimed") if e["job_id"] == job["id"]]
    assert [e["resume_after_chunks"] for e in claimed] == [kept_chunks]
    final = await cluster.segments(job["id"])
    assert final[: len(kept)] == kept  # resumed after them, never redone
    assert [i for i, _ in final] == list(range(len(final)))


async def test_stopped_worker_is_fenced_after_another_takes_over(
    http: aiohttp.ClientSession, cluster: Cluster, longer_wav: Path
) -> None:
    job = await submit(http, longer_wav)
    await wait_for(http, job["id"], lambda j: j["segments_done"] > 0 or finished(j))
    row = await cluster.row(job["id"])
    assert row["status"] == "processing", "the job finished before it could be stopped"
    stalled = cluster.by_id(row["worker_id"])
    stalled.proc.send_signal(signal.SIGSTOP)
    try:
        done = await wait_for(http, job["id"], finished)
    finally:
        stalled.proc.send_signal(signal.SIGCONT)
    assert done["status"] == "completed"
    before = (await cluster.row(job["id"]), await cluster.segments(job["id"]))
    assert before[0]["worker_id"] != stalled.worker_id
    # Awake again, the stalled worker finds its lease gone and lets the job go.
    await wait_log(stalled, "job.lease_lost")
    after = (await cluster.row(job["id"]), await cluster.segments(job["id"]))
    assert dict(after[0]) == dict(before[0]) and after[1] == before[1]


async def test_many_jobs_complete_exactly_once_across_two_workers(
    http: aiohttp.ClientSession, cluster: Cluster, tmp_path: Path
) -> None:
    clip = tmp_path / "clip.wav"
    _cut(REPO / "tests" / "audio" / "report.wav", clip, seconds=2.0)
    gate = asyncio.Semaphore(4)  # the per-client upload limit

    async def one(_: int) -> str:
        async with gate:
            return str((await submit(http, clip))["id"])

    ids = await asyncio.gather(*(one(i) for i in range(MANY)))
    conn = await asyncpg.connect(cluster.url)
    try:
        deadline = time.monotonic() + 2 * BOUND_S * max(1, MANY // 200)
        while await conn.fetchval(
            "SELECT count(*) FROM jobs WHERE id = ANY($1) AND status IN ('queued','processing')",
            ids,
        ):
            assert time.monotonic() < deadline, f"{MANY} jobs did not finish"
            await asyncio.sleep(0.5)
        rows = await conn.fetch("SELECT * FROM jobs WHERE id = ANY($1)", ids)
    finally:
        await conn.close()
    assert len(rows) == MANY
    assert {r["status"] for r in rows} == {"completed"}
    assert {r["attempts"] for r in rows} == {1}
    # Each job's stored transcript is whole: its text is its own segments'.
    conn = await asyncpg.connect(cluster.url)
    try:
        counts = await conn.fetch(
            "SELECT job_id, count(*) AS n FROM segments WHERE job_id = ANY($1) GROUP BY job_id",
            ids,
        )
    finally:
        await conn.close()
    stored = {r["job_id"]: r["n"] for r in counts}
    assert all(r["segments_done"] == stored.get(r["id"], 0) for r in rows)
    # Not asserted: that each text is the clip's. Identical clips packed into one
    # window (engine/batcher.pack) come back merged or empty for some jobs, on
    # SQLite too: a bug of the execution core, reported, not this issue's.
    by_worker: dict[str, int] = {}
    for r in rows:
        by_worker[r["worker_id"]] = by_worker.get(r["worker_id"], 0) + 1
    assert len(by_worker) == 2, by_worker  # both workers took a share


def _cut(src: Path, dst: Path, *, seconds: float) -> None:
    with wave.open(str(src)) as r:
        params = r.getparams()
        frames = r.readframes(int(params.framerate * seconds))
    with wave.open(str(dst), "wb") as w:
        w.setparams(params)
        w.writeframes(frames)
