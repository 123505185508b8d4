"""A test double of the engine host, for tests of scheduling and fencing (the
real engine's own tests transcribe): it answers every call the worker makes and
decodes nothing; subclasses script ``open`` and ``step``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sona.jobs import NewJob, TranscribeOptions


class EngineDouble:
    def __init__(self) -> None:
        self.events: asyncio.Queue[Any] = asyncio.Queue()
        self.pid, self.restarts, self.generation = None, 0, 0
        self.silent_s: float | None = None

    async def load(self, model_id: str, path: Path) -> None:
        return None

    async def unload(self, model_id: str) -> None:
        return None

    def close(self, job_id: str) -> None:
        return None

    async def kill(self) -> None:
        return None


def fake_job(job_id: str, *, duration: float = 1.0, n: int = 0) -> NewJob:
    """A queued tiny.en job whose file the double never reads."""
    return NewJob(
        id=job_id,
        options=TranscribeOptions(model="tiny.en", language="en"),
        model="tiny.en",
        priority=0,
        file_path=f"/nowhere/{n}",
        file_name="a.wav",
        file_sha256=str(n),
        file_size=1,
        duration=duration,
        max_attempts=3,
    )
