"""What a worker is given and what it reports: ``WorkerConfig`` (built from
Settings by the runtime), ``WorkerState`` (for ``/health`` and ``/ready``) and
``StepStats`` (what the batches have been like). Plain data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sona.engine import ChunkInfo
from sona.settings import default_of

WorkerState = Literal["running", "retrying", "drained", "stopped"]


@dataclass(frozen=True)
class WorkerConfig:
    """Defaults are Settings' own (``default_of``): the runtime builds this from
    its Settings; tests name what they change."""

    max_audio_seconds: float
    batch_size: int = 8  # windows of speech per engine step (the CUDA default)
    parallel_steps: int = 1  # engine steps in flight at once (EngineConfig.replicas)
    chunk_s: float = default_of("chunk_s")  # most speech in one window
    beam_size: int = default_of("beam_size")  # when a job does not say
    # Jobs in flight at once, their chunks sharing batches.
    max_jobs: int = default_of("max_jobs_in_flight")
    lease_s: float = default_of("lease_s")
    poll_interval_s: float = default_of("poll_interval_s")
    job_timeout_s: float = default_of("job_timeout_s")
    step_timeout_s: float = default_of("step_timeout_s")  # past this the engine hung: kill it


@dataclass
class StepStats:
    """What the batches have been like, for operators and the tests."""

    steps: int = 0
    chunks: int = 0
    most_jobs_in_a_step: int = 0
    last_step_s: float = 0.0
    busy_s: float = 0.0  # time the engine spent in steps, all told

    def record(self, batch: list[ChunkInfo], seconds: float) -> None:
        self.steps += 1
        self.chunks += len(batch)
        self.busy_s += seconds
        jobs = len({c.job_id for c in batch})
        self.most_jobs_in_a_step = max(self.most_jobs_in_a_step, jobs)
        self.last_step_s = seconds
