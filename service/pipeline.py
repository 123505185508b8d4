"""One transcription from file to segments: decode with limits, pick quality
defaults, split channels for ``diarize=channels``. Synchronous: the worker runs
it off the event loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from service.audio import SAMPLE_RATE, decode, probe
from service.engine import AudioInfo, LoadedModel
from service.jobs import Segment, TranscribeOptions

SPEAKERS = ("left", "right")


@dataclass(frozen=True)
class Limits:
    max_seconds: float
    vad_min_seconds: float


def transcribe_file(
    model: LoadedModel,
    path: Path,
    options: TranscribeOptions,
    limits: Limits,
    *,
    on_duration: Callable[[float], None],
    on_segment: Callable[[Segment, float], None],
    should_stop: Callable[[], bool],
) -> AudioInfo:
    """Transcribe ``path``. ``on_segment(segment, processed_seconds)`` gets every
    finished segment, numbered across channels."""
    split = options.diarize == "channels" and probe(path)[1] >= 2
    audio = decode(path, max_seconds=limits.max_seconds, split_channels=split)
    channels = list(audio) if split else [audio]
    duration = channels[0].size / SAMPLE_RATE
    on_duration(duration)
    if options.vad_filter is None:
        # Long recordings carry silences that Whisper fills with invented text (F9).
        options = options.model_copy(update={"vad_filter": duration >= limits.vad_min_seconds})

    next_index = 0
    info = AudioInfo(duration, options.language)
    for ch, samples in enumerate(channels):
        base = next_index
        speaker = SPEAKERS[ch] if split else None

        def emit(
            seg: Segment, base: int = base, ch: int = ch, speaker: str | None = speaker
        ) -> None:
            nonlocal next_index
            seg = replace(seg, index=base + seg.index, speaker=speaker)
            next_index = max(next_index, seg.index + 1)
            # Channels run one after another; progress spans all of them.
            on_segment(seg, (ch * duration + min(seg.end, duration)) / len(channels))

        info = model.transcribe(samples, options, emit, should_stop)
    return AudioInfo(duration, info.language, info.language_probability)
