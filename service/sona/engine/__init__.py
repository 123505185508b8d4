"""The engine interface: what the worker needs from a speech-to-text backend.

The engine lives in a child process (``engine/host.py`` runs it, one per
device) so that a crash, a hang or a cancel can be ended by killing it. The
worker talks to it through ``EngineHost`` and the small messages below:

* ``open(JobSpec)``: decode the file as a stream, cut it into chunks of speech
  (``engine/chunker.py``) and announce them (``ChunksReady``), then
  ``Prepared`` with the real duration — or ``PrepareFailed``. The engine keeps
  only a few chunks per job ahead of the batches, so memory does not grow with
  the file.
* ``step(model, items)``: decode one batch of announced chunks, from any jobs
  whose options share a batch (``engine/batcher.py`` picks them); returns the
  segments of each chunk, timed on the recording.
* ``close(job_id)``: forget a job (done or cancelled): its decoding stops.
* ``detect_language(model, path)``: the language of a file's first speech,
  without transcribing it.
* ``transcribe(model, options, samples)``: a live session's turn, decoded
  ahead of every job's step (``sona/live.py``).

Inside the engine process, ``engine/child.py`` drives an ``Engine`` (the
backend: ``engine/whisper.py``'s, the only module that knows faster-whisper);
``engine/entry.py`` imports it there, so the daemon never loads faster-whisper
or CTranslate2 (``resolve_device`` with ``auto`` asks CTranslate2 for a GPU,
on a worker node only). The pipe's messages are ``engine/messages.py``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sona.errors import AudioTooLong
from sona.jobs import Segment, TranscribeOptions
from sona.settings import default_of

if TYPE_CHECKING:
    import numpy as np

    from sona.engine.chunker import RawChunk

SPEAKERS = ("left", "right")


def resolve_device(device: str) -> str:
    """``cpu`` or ``cuda``; ``auto`` is CUDA when CTranslate2 sees a GPU. Both the
    daemon (batch size) and the engine process (loading) decide with this."""
    if device != "auto":
        return device
    import ctranslate2  # the CUDA runtime only, not faster-whisper

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_parallel_steps(parallel_steps: int | None, device: str) -> int:
    """Steps decoded at once. A small model's matrices keep one thread busy
    better than several: two one-thread replicas beat one two-thread replica on
    two cores (docs/performance.md). On CUDA one step fills the GPU."""
    if parallel_steps is not None:
        return parallel_steps
    return 1 if resolve_device(device) == "cuda" else min(2, usable_cores())


def resolve_cpu_threads(cpu_threads: int, parallel_steps: int) -> int:
    """Threads per step: asked for, else the cores shared out among the steps."""
    return cpu_threads or max(1, usable_cores() // parallel_steps)


@dataclass(frozen=True)
class EngineConfig:
    """The engine process's settings. Defaults are Settings' own (``default_of``):
    the daemon builds this from its Settings; tests name what they change."""

    device: str = default_of("device")
    compute_type: str = default_of("compute_type")
    cpu_threads: int = 0  # per replica; 0: CTranslate2's default
    replicas: int = 1  # steps decoded at once (``resolve_parallel_steps``)
    # Most speech in one chunk. Whisper's window holds 30 s, but tiny models end
    # a window early when it is nearly full of speech (WER 0.4 against 0.045 at
    # 20 s on the bench's long file, at the same speed: docs/performance.md).
    chunk_s: float = default_of("chunk_s")
    nice: int = default_of("engine_nice")  # added to the process's niceness: the API first
    fit_windows: bool = default_of("fit_windows")  # encoder windows fitted to their audio
    # Chunks a job may have cut and waiting for a batch: bounds memory per job.
    ahead: int = 16
    # Sequential decoding (condition_on_previous_text) holds the whole file in
    # memory, as faster-whisper does: longer audio fails the job (Settings).
    max_sequential_seconds: float = 1800.0
    # The parent's log settings: the child's lines look like the daemon's.
    log_level: str = default_of("log_level")
    log_format: str = "json"  # resolved: never "auto" here
    # A model load past this is a hung engine: it is killed and restarted.
    load_timeout_s: float = default_of("model_load_timeout_s")
    # The host pings the engine's command thread this often; a ping unanswered
    # for ping_timeout_s (a model load aside) means the engine is not answering.
    ping_interval_s: float = 1.0
    ping_timeout_s: float = default_of("engine_ping_timeout_s")


def sequential_too_long(limit_s: float, seconds: float | None = None) -> AudioTooLong:
    """The refusal of audio past the sequential-mode limit, at submit (from the
    header) or in the engine (from the samples, when a header lied)."""
    length = f"audio is {seconds:.0f} s long; " if seconds is not None else ""
    return AudioTooLong(
        f"{length}with condition_on_previous_text the whole file is decoded in memory, "
        f"so it is limited to {limit_s:.0f} s (max_sequential_seconds); send longer audio "
        "without it",
        param="condition_on_previous_text",
    )


@dataclass(frozen=True)
class JobSpec:
    """What the engine needs to prepare one job's audio."""

    job_id: str
    path: Path
    options: TranscribeOptions
    model_id: str
    max_seconds: float
    vad: bool
    channels: int  # 1, or 2 for diarize=channels (one chunk stream per channel)
    skip_chunks: int = 0  # already stored by an earlier attempt: cut, not announced
    # Seconds at the file's start already covered by stored chunks that were not
    # cut from it (a live session's turns): only the audio after them is cut, its
    # chunks numbered on from ``skip_chunks`` and timed on the file. None: a
    # re-run cuts the whole file again and skips ``skip_chunks`` by count. Never
    # with condition_on_previous_text (a live session's options have none).
    from_s: float | None = None
    token: str = ""  # the claim's lease token, echoed in every event about this job


@dataclass(frozen=True)
class ChunkInfo:
    """A chunk ready for a batch. ``no`` counts a job's chunks from 0 in the
    order they are cut, the same on every run of the same file and options."""

    job_id: str
    no: int
    channel: int
    start: float
    end: float
    seconds: float = 0.0  # of speech: silences VAD cut out are not counted


@dataclass(frozen=True)
class ChunksReady:
    job_id: str
    chunks: list[ChunkInfo]
    language: str
    token: str = ""
    language_probability: float | None = None  # None: the job named its language


@dataclass(frozen=True)
class Detection:
    """The language of some speech: the likeliest, how sure the model is, and
    the likeliest few with theirs (an English-only model knows only ``en``)."""

    language: str
    probability: float
    languages: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Prepared:
    """Every chunk is announced: ``total`` chunks (skipped ones included);
    ``duration`` is what was decoded, ``warnings`` what the job should carry
    (``audio_truncated``: the file is damaged or shorter than its header says)."""

    job_id: str
    duration: float
    total: int
    token: str = ""
    warnings: tuple[str, ...] = ()
    # As in ChunksReady: a resume whose chunks were all stored announces none.
    language: str | None = None
    language_probability: float | None = None


@dataclass(frozen=True)
class PrepareFailed:
    job_id: str
    code: str  # an error code of service.errors (invalid_audio, audio_too_long, …)
    message: str
    token: str = ""


@dataclass(frozen=True)
class Crashed:
    """The engine process died (signal or exit code in ``reason``); everything it
    held is gone. The host restarts it and reloads its models. ``deliberate``:
    Sona killed it (a hung step), so the jobs in flight are not to blame.
    ``stepping``: the jobs whose chunks were in a step when it died."""

    reason: str
    deliberate: bool = False
    stepping: frozenset[str] = frozenset()


EngineEvent = ChunksReady | Prepared | PrepareFailed | Crashed


class Engine(Protocol):
    """The speech-to-text backend the engine process drives (``WhisperBackend``):
    its models by id, and the decoding they do. Called from the process's
    threads, never from the daemon."""

    def load(self, model_id: str, path: Path) -> None: ...

    def unload(self, model_id: str) -> None: ...

    def language(
        self, model_id: str, options: TranscribeOptions, sample: np.ndarray
    ) -> tuple[str, float | None]:
        """The language of a job, from its first chunk (or the one asked for),
        and its probability when it was detected."""
        ...

    def detect(self, model_id: str, sample: np.ndarray, top: int = 5) -> Detection:
        """The language of ``sample`` (its first 30 s), and the ``top`` likeliest."""
        ...

    def decode(
        self,
        model_id: str,
        options: TranscribeOptions,
        language: str,
        rows: list[list[RawChunk]],
        stop: Callable[[], bool] = ...,
        *,
        fit: bool = ...,
    ) -> list[list[list[Segment]]]:
        """Segments of each chunk of each row (chunks packed into one window),
        decoded as one batch; ``stop`` is asked between its stages; ``fit``:
        the encoder reads the rows' length, not 30 s (live turns)."""
        ...

    def sequential(
        self, model_id: str, options: TranscribeOptions, audio: np.ndarray, vad: bool
    ) -> tuple[str, float | None, Iterator[Segment]]:
        """Each window conditioned on the text before it: (language, its
        probability when detected, segments)."""
        ...


class EngineHost(Protocol):
    """The engine as the worker and the model registry see it."""

    events: asyncio.Queue[EngineEvent]

    @property
    def pid(self) -> int | None: ...

    @property
    def restarts(self) -> int: ...

    @property
    def generation(self) -> int:
        """Counts engine processes started; a job opened in an older one died with it."""
        ...

    @property
    def silent_s(self) -> float | None:
        """Seconds the engine has left a ping unanswered, once past the ping
        timeout (a stopped or wedged process); None while it answers."""
        ...

    async def load(self, model_id: str, path: Path) -> None:
        """Load a model; ``ModelLoadFailed`` if it will not, ``EngineCrashed`` if
        the engine dies meanwhile or hangs past the load timeout (then it is
        killed and restarted)."""
        ...

    async def unload(self, model_id: str) -> None:
        """Free a model's memory (the engine process's, really)."""
        ...

    def open(self, spec: JobSpec) -> None: ...

    async def detect_language(
        self, model_id: str, path: Path, max_seconds: float
    ) -> Detection | None:
        """The language of the first speech in the file at ``path``, found as a
        job's is; None when it holds no speech."""
        ...

    def close(self, job_id: str) -> None: ...

    async def transcribe(
        self, model_id: str, options: TranscribeOptions, audio: np.ndarray
    ) -> tuple[str | None, list[Segment]]:
        """A live turn's segments (16 kHz mono float32 samples; times from its
        start) and its language (None: no speech in it), decoded ahead of the
        jobs' steps. ``EngineCrashed`` if the engine dies meanwhile."""
        ...

    async def step(self, model_id: str, items: list[ChunkInfo]) -> list[list[Segment]]:
        """Decode ``items`` (chunks of jobs sharing batch options) as one batch.
        ``EngineCrashed`` if the engine dies meanwhile."""
        ...

    async def kill(self) -> None:
        """Kill the engine now (a hung step, a drain past its timeout); it restarts."""
        ...

    async def stop(self) -> None:
        """Stop for good."""
        ...
