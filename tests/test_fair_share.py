"""Fair share between jobs (issue 18): a short job submitted behind a long one
is claimed at once and decoded within a few steps, while the long job goes on;
one job alone fills every row. First on an engine double (the scheduling
alone), then on a real daemon with the tiny.en model on real speech."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from sona.engine import ChunkInfo, ChunksReady, JobSpec, Prepared
from sona.jobs import Segment, Status
from sona.store.sqlite import SqliteStore
from tests.audio_factory import concat_wav
from tests.engine_double import EngineDouble, fake_job
from tests.test_worker import completed, run_worker

AUDIO = Path(__file__).parent / "audio"
AHEAD = 16  # the engine's per-job look-ahead (EngineConfig.ahead)


class EndlessAndClipEngine(EngineDouble):
    """A test double: the job ``long`` keeps ``AHEAD`` chunks announced and never
    ends until ``end_long`` is set; any other job is one 11 s chunk. Records
    which jobs each step carried."""

    def __init__(self) -> None:
        super().__init__()
        self.specs: dict[str, JobSpec] = {}
        self.cut: dict[str, int] = {}
        self.steps: list[list[str]] = []
        self.opened_at: dict[str, int] = {}  # job → steps taken when it was opened
        self.end_long = asyncio.Event()

    def open(self, spec: JobSpec) -> None:
        self.specs[spec.job_id] = spec
        self.opened_at[spec.job_id] = len(self.steps)
        if spec.job_id == "long":
            self.cut["long"] = 0
            self._announce_long(AHEAD)
            return
        chunk = ChunkInfo(spec.job_id, 0, 0, 0.0, 11.0, 11.0)
        self.events.put_nowait(ChunksReady(spec.job_id, [chunk], "en", spec.token))
        self.events.put_nowait(Prepared(spec.job_id, 11.0, 1, spec.token))

    def _announce_long(self, n: int) -> None:
        spec = self.specs["long"]
        first = self.cut["long"]
        chunks = [
            ChunkInfo("long", no, 0, no * 20.0, no * 20.0 + 18, 18.0)
            for no in range(first, first + n)
        ]
        self.cut["long"] += n
        self.events.put_nowait(ChunksReady("long", chunks, "en", spec.token))

    async def step(self, model_id: str, items: list[ChunkInfo]) -> list[list[Segment]]:
        await asyncio.sleep(0.02)
        self.steps.append([item.job_id for item in items])
        if self.end_long.is_set():
            if "long" in self.specs and self.cut["long"] > 0:
                spec = self.specs["long"]
                self.events.put_nowait(
                    Prepared("long", 20.0 * self.cut["long"], self.cut["long"], spec.token)
                )
        else:
            self._announce_long(sum(item.job_id == "long" for item in items))  # stay ahead
        return [[Segment(0, item.start, item.end, f" {item.job_id}")] for item in items]


async def test_a_job_behind_a_long_one_is_claimed_at_once_and_decoded_in_the_next_steps(
    tmp_path: Path,
) -> None:
    """The long job's look-ahead keeps the pool full, so a claim rule that waits
    for the pool to run low, or batches filled oldest job first, would hold
    the clip until the long job ends, which here it never does by itself."""
    store = await SqliteStore.open(str(tmp_path / "db.sqlite"))
    engine = EndlessAndClipEngine()
    worker, task = run_worker(store, engine, tmp_path, batch_size=2, parallel_steps=2)
    try:
        await store.create(fake_job("long", duration=10_000.0))
        worker.wake()
        while len(engine.steps) < 6:  # the long job runs, its pool full
            assert not task.done()
            await asyncio.sleep(0.01)
        await store.create(fake_job("clip", duration=11.0, n=1))
        worker.wake()
        clip = await completed(store, "clip", task)
        assert clip.text == "clip"
        assert (await store.get("long")).status == Status.PROCESSING
        opened = engine.opened_at["clip"]
        carried = next(n for n, jobs in enumerate(engine.steps) if "clip" in jobs)
        assert carried - opened <= 2, engine.steps  # the steps in flight, then the clip's
        assert engine.steps[carried] == ["clip"], engine.steps  # its first step its own
        assert all(jobs == ["long", "long"] for jobs in engine.steps[:opened])  # alone: every row
        engine.end_long.set()
        assert (await completed(store, "long", task)).status == Status.COMPLETED
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()


def clip_and_long(tmp_path: Path, manifest: dict[str, Any]) -> tuple[Path, Path]:
    """An ~11 s clip (two sentences) and a ~10 min file of every test sentence."""
    clip = concat_wav([AUDIO / "fox.wav", AUDIO / "report.wav"], tmp_path / "clip.wav")
    sentences = [AUDIO / name for name in manifest if name != "stereo.wav"]
    long = concat_wav(sentences, tmp_path / "long.wav", gap_s=1.0, repeat=20)
    return clip, long


@pytest.mark.slow  # a real daemon or model for 10 s or more
async def test_a_clip_submitted_behind_a_long_job_completes_while_it_runs(
    daemon_factory: Any, tmp_path: Path, manifest: dict[str, Any]
) -> None:
    """The issue's case on a real daemon: a long upload, then an 11 s clip. The
    clip completes, with its words, while the long job is still processing,
    decoded in a step of its own (one window, not beside the long job's)."""
    clip_wav, long_wav = clip_and_long(tmp_path, manifest)
    daemon = daemon_factory("--model", "tiny.en")
    async with httpx.AsyncClient(base_url=daemon.url, timeout=60) as http:

        async def submit(path: Path) -> str:
            files = {"file": (path.name, await asyncio.to_thread(path.read_bytes), "audio/wav")}
            resp = await http.post("/v1/jobs", files=files)
            assert resp.status_code == 202, resp.text
            return str(resp.json()["id"])

        async def get(job_id: str) -> dict[str, Any]:
            return dict((await http.get(f"/v1/jobs/{job_id}")).json())

        long_id = await submit(long_wav)
        deadline = time.monotonic() + 300
        while (long := await get(long_id))["processed_seconds"] <= 0:  # really running
            assert time.monotonic() < deadline, long
            await asyncio.sleep(0.2)
        clip_id = await submit(clip_wav)
        while (clip := await get(clip_id))["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline, clip
            await asyncio.sleep(0.2)
        long = await get(long_id)
        assert clip["status"] == "completed", clip
        assert long["status"] == "processing" and long["progress"] < 1, long
        words = clip["text"].lower()
        assert all(w in words for w in ("fox", "dog", "report", "friday")), words
        ready = (await http.get("/ready")).json()
        assert ready["batches"]["most_jobs_in_a_step"] == 1, ready
        await http.delete(f"/v1/jobs/{long_id}")
