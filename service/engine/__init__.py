"""The engine interface: what the worker needs from a speech-to-text backend.

Only ``engine/whisper.py`` knows faster-whisper. Engines are synchronous and
run off the event loop; they report segments through a callback and stop early
when ``should_stop()`` turns true (checked between segments, i.e. within one
decoding window)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from service.jobs import Segment, TranscribeOptions


@dataclass(frozen=True)
class AudioInfo:
    duration: float
    language: str | None
    language_probability: float = 0.0


class LoadedModel(Protocol):
    """A model in memory, ready to transcribe."""

    name: str

    def transcribe(
        self,
        audio: np.ndarray,
        options: TranscribeOptions,
        on_segment: Callable[[Segment], None],
        should_stop: Callable[[], bool],
    ) -> AudioInfo:
        """Transcribe 16 kHz mono float32 samples, calling ``on_segment`` per
        finished segment (indices from 0). Raises ``service.errors.Cancelled``
        as soon as ``should_stop()`` is true between segments."""
        ...

    def close(self) -> None:
        """Free the model's memory."""
        ...


class Engine(Protocol):
    """Loads models. Both methods block: call them off the event loop."""

    def load(self, name: str, path: Path) -> LoadedModel: ...

    def download(self, name: str, cache_dir: Path) -> Path:
        """Fetch a model by name from the model hub; ``ModelNotFound`` if impossible."""
        ...
