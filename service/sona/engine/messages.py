"""What ``engine/host.py`` and the engine process say over their pipe.

Plain dataclasses, apart from the process that acts on them
(``engine/child.py``), so that the daemon can speak to the engine without
importing the backend: faster-whisper and CTranslate2 load in the child only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sona.engine import ChunkInfo, JobSpec
from sona.jobs import TranscribeOptions


@dataclass(frozen=True)
class Load:
    req: int
    model_id: str
    path: Path


@dataclass(frozen=True)
class Unload:
    req: int
    model_id: str


@dataclass(frozen=True)
class Open:
    spec: JobSpec


@dataclass(frozen=True)
class Close:
    job_id: str


@dataclass(frozen=True)
class Detect:
    req: int
    model_id: str
    path: Path
    max_seconds: float


@dataclass(frozen=True)
class Step:
    req: int
    model_id: str
    items: list[ChunkInfo]


@dataclass(frozen=True)
class Transcribe:
    """A live session's turn (16 kHz mono samples): decoded ahead of the jobs'
    steps by the next free inference thread (``sona/live.py``)."""

    req: int
    model_id: str
    options: TranscribeOptions
    audio: Any  # np.ndarray, float32; numpy is not imported on the daemon's side here


@dataclass(frozen=True)
class Ping:
    """Are you there? Answered by the command thread with a ``Pong``."""


@dataclass(frozen=True)
class Pong:
    pass


@dataclass(frozen=True)
class Reply:
    req: int
    value: Any = None
    error: tuple[str, str] | None = None  # (code, message) of a SonaError
