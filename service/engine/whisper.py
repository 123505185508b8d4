"""The faster-whisper engine: the only module that imports faster_whisper."""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.utils import download_model

from service.engine import AudioInfo
from service.errors import Cancelled, ModelNotFound
from service.jobs import Segment, TranscribeOptions, Word

# faster-whisper's own fallback schedule, used when the caller fixes no temperature.
_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


class WhisperEngine:
    """Loads CTranslate2 Whisper models with faster-whisper, never touching the
    network unless ``download`` is called."""

    def __init__(
        self, *, device: str = "auto", compute_type: str = "default", cpu_threads: int = 0
    ) -> None:
        self.device = device
        self.compute_type = compute_type
        self.cpu_threads = cpu_threads

    def load(self, name: str, path: Path) -> WhisperLoaded:
        model = WhisperModel(
            str(path),
            device=self.device,
            compute_type=self.compute_type,
            cpu_threads=self.cpu_threads,
            local_files_only=True,
        )
        return WhisperLoaded(name, model)

    def download(self, name: str, cache_dir: Path) -> Path:
        try:
            return Path(download_model(name, cache_dir=str(cache_dir)))
        except Exception as exc:  # hub errors come in many types; all mean "not here"
            raise ModelNotFound(f"model {name!r} could not be downloaded: {exc}") from exc


class WhisperLoaded:
    """One faster-whisper model in memory."""

    def __init__(self, name: str, model: WhisperModel) -> None:
        self.name = name
        self._model: WhisperModel | None = model

    def transcribe(
        self,
        audio: np.ndarray,
        options: TranscribeOptions,
        on_segment: Callable[[Segment], None],
        should_stop: Callable[[], bool],
    ) -> AudioInfo:
        if self._model is None:
            raise RuntimeError(f"model {self.name} was unloaded")
        segments, info = self._model.transcribe(audio, **_whisper_kwargs(options))
        result = AudioInfo(info.duration, info.language, info.language_probability)
        # The generator decodes one window per step; checking between steps is
        # what makes cancellation land within one decoding window.
        for seg in segments:
            if should_stop():
                raise Cancelled("transcription stopped")
            on_segment(_segment(seg))
        if should_stop():
            raise Cancelled("transcription stopped")
        return result

    def close(self) -> None:
        # CTranslate2 frees the weights when the last reference goes.
        self._model = None
        gc.collect()


def _whisper_kwargs(o: TranscribeOptions) -> dict[str, Any]:
    return {
        "language": o.language,
        "task": o.task,
        "initial_prompt": o.prompt,
        "hotwords": o.hotwords,
        "word_timestamps": o.word_timestamps,
        "vad_filter": bool(o.vad_filter),
        "beam_size": o.beam_size or 5,
        "temperature": _TEMPERATURES if o.temperature is None else o.temperature,
    }


def _segment(seg: Any) -> Segment:
    return Segment(
        index=seg.id - 1,  # faster-whisper numbers from 1
        start=round(seg.start, 3),
        end=round(seg.end, 3),
        text=seg.text,
        words=[
            Word(w.word, round(w.start, 3), round(w.end, 3), w.probability) for w in seg.words or []
        ],
        tokens=list(seg.tokens),
        temperature=seg.temperature or 0.0,
        avg_logprob=seg.avg_logprob,
        compression_ratio=seg.compression_ratio,
        no_speech_prob=seg.no_speech_prob,
        seek=seg.seek,
    )
