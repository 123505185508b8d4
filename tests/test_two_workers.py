"""RELIABILITY 8 on SQLite: two workers, 1,000 jobs, every job completed once
with ``attempts = 1``.

One data dir has one daemon (the lock file), so on SQLite the two workers live
in one process, each with its own connection to the database file: the same
claim contention two processes would have (``BEGIN IMMEDIATE … UPDATE … WHERE
status = 'queued'``). Workers in separate processes and hosts are the
PostgreSQL store's (docs/scaling.md). The engine here is a test double: this
is a test of claiming and fencing, not of transcription (which the real engine
tests cover); each job's one "segment" names the job, so a mixed-up result
would show."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from sona.engine import ChunkInfo, ChunksReady, JobSpec, Prepared
from sona.engine.registry import ModelRegistry
from sona.events import EventHub
from sona.jobs import Segment, Status
from sona.notify import LocalNotifier
from sona.store.sqlite import SqliteStore
from sona.worker import Worker
from sona.worker_config import WorkerConfig
from tests.engine_double import EngineDouble, fake_job

JOBS = 1000


class OneChunkEngine(EngineDouble):
    """Every job is one chunk whose segment is the job's id."""

    def open(self, spec: JobSpec) -> None:
        chunk = ChunkInfo(spec.job_id, 0, 0, 0.0, 1.0, 1.0)
        self.events.put_nowait(ChunksReady(spec.job_id, [chunk], "en", spec.token))
        self.events.put_nowait(Prepared(spec.job_id, 1.0, 1, spec.token))

    async def step(self, model_id: str, items: list[ChunkInfo]) -> list[list[Segment]]:
        await asyncio.sleep(0)  # let the other worker in, as a real step would
        return [[Segment(index=0, start=0.0, end=1.0, text=f" {c.job_id}")] for c in items]


@pytest.mark.slow  # a real daemon or model for 10 s or more
async def test_r08_two_workers_complete_1000_jobs_each_exactly_once(tmp_path: Path) -> None:
    db = str(tmp_path / "sona.db")
    stores = [await SqliteStore.open(db), await SqliteStore.open(db)]
    try:
        for n in range(JOBS):
            await stores[0].create(fake_job(f"j{n:04d}", n=n))
        workers = []
        for store in stores:
            engine = OneChunkEngine()
            models = ModelRegistry(engine, model_dir=tmp_path, allow_download=False, max_loaded=1)
            config = WorkerConfig(max_audio_seconds=60, poll_interval_s=0.05, max_jobs=8)
            worker = Worker(store, models, engine, EventHub(), config, LocalNotifier())  # type: ignore[arg-type]
            workers.append(worker)
        await asyncio.wait_for(asyncio.gather(*(w.run(burst=True) for w in workers)), 600)
        jobs, more = await stores[0].list_jobs(status=None, limit=JOBS + 1, before=None)
        assert len(jobs) == JOBS and not more
        assert Counter(j.status for j in jobs) == {Status.COMPLETED: JOBS}
        assert all(j.attempts == 1 and j.crashes == 0 for j in jobs)
        assert all(j.text == j.id and j.segments_done == 1 for j in jobs)  # its own result
        share = [w.stats.chunks for w in workers]
        assert sum(share) == JOBS and min(share) > 0, share  # both took part, none twice
    finally:
        for store in stores:
            await store.close()
