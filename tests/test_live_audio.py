"""The live session's pure parts: PCM16 decoding, 24 → 16 kHz resampling, the
loudness turn detector, the protocol's session configuration and events, and
the engine process putting a live turn before the jobs' steps."""

from __future__ import annotations

import queue
import wave
from typing import Any

import numpy as np
import pytest
from openai.types.realtime.realtime_server_event import RealtimeServerEvent
from openai.types.realtime.session_created_event import SessionCreatedEvent
from pydantic import TypeAdapter

from sona import realtime_events as ev
from sona.engine import ChunkInfo, EngineConfig
from sona.engine.child import EngineProcess
from sona.engine.live_turns import take_turns
from sona.engine.messages import Step, Transcribe
from sona.errors import InvalidRequest
from sona.jobs import TranscribeOptions
from sona.live_audio import FRAME, RATE, Resampler, TurnDetector, pcm16
from sona.live_partial import PartialText
from tests.conftest import AUDIO

SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)


def tone(freq: float, seconds: float, rate: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_pcm16_is_little_endian_signed() -> None:
    data = np.array([0, 16384, -32768, 32767], "<i2").tobytes()
    assert pcm16(data).tolist() == pytest.approx([0.0, 0.5, -1.0, 32767 / 32768])


def test_resampling_keeps_a_tone_and_drops_what_16k_cannot_hold() -> None:
    """A 1 kHz tone passes at its level; a 10 kHz tone (above 16 kHz's 8 kHz
    Nyquist) is filtered out instead of folding back as an alias."""
    low, high = Resampler(), Resampler()
    kept = np.concatenate([low(f) for f in np.split(tone(1000, 1.0, 24_000), 10)])
    gone = np.concatenate([high(f) for f in np.split(tone(10_000, 1.0, 24_000), 10)])
    assert kept.size == pytest.approx(RATE, abs=2)
    rms = float(np.sqrt(np.mean(kept[200:] ** 2)))
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.02)
    assert float(np.sqrt(np.mean(gone[200:] ** 2))) < 0.005
    spectrum = np.abs(np.fft.rfft(kept[200:]))
    assert np.argmax(spectrum) * RATE / (kept.size - 200) == pytest.approx(1000, abs=2)


def test_resampling_does_not_depend_on_the_frame_cut() -> None:
    signal = tone(440, 0.5, 24_000)
    whole = Resampler()(signal)
    cut = Resampler()
    pieces = np.concatenate([cut(signal[a : a + 777]) for a in range(0, signal.size, 777)])
    assert np.allclose(whole, pieces, atol=1e-6)


def test_16k_input_is_taken_as_is() -> None:
    signal = tone(440, 0.1, RATE)
    assert np.array_equal(Resampler(rate=RATE)(signal), signal)


def speech_16k(name: str) -> np.ndarray:
    with wave.open(str(AUDIO / name)) as w:
        return pcm16(w.readframes(w.getnframes()))


def turns_of(signal: np.ndarray, step: int) -> list[tuple[float, float]]:
    detector = TurnDetector()
    events = [
        e for at in range(0, signal.size, step) for e in detector.feed(signal[at : at + step])
    ]
    kinds = [e.kind for e in events]
    assert kinds == ["started", "stopped"] * (len(kinds) // 2), kinds
    times = [e.sample / RATE for e in events]
    return list(zip(times[::2], times[1::2], strict=True))


def test_the_detector_finds_the_sentences_and_never_bridges_a_silence() -> None:
    """Each sentence's middle is inside a turn; no turn spans the 1 s silence
    between two sentences (a pause inside one may end a turn: 500 ms does)."""
    gap = np.zeros(RATE, np.float32)
    clips = [speech_16k(n) for n in ("fox.wav", "report.wav", "weather.wav", "numbers.wav")]
    turns = turns_of(np.concatenate([gap, *(x for c in clips for x in (c, gap))]), 1600)
    t = 1.0
    for clip in clips:
        length = clip.size / RATE
        middle, silence = t + length / 2, t + length + 0.5
        assert any(a <= middle <= b for a, b in turns), (middle, turns)
        assert not any(a <= silence <= b for a, b in turns), (silence, turns)
        t += length + 1.0
    assert len(turns) <= 2 * len(clips)


def test_steady_noise_becomes_the_floor_within_seconds() -> None:
    """Hiss at -40 dBFS: at most one false turn while the floor is learnt (the
    engine's Silero finds no speech in it), then nothing."""
    rng = np.random.default_rng(0)
    noise = (rng.standard_normal(30 * RATE) * 0.01).astype(np.float32)
    turns = turns_of(noise, FRAME)
    assert len(turns) <= 1 and all(end <= 15 for _, end in turns), turns


def test_session_update_reads_what_it_names_and_keeps_the_rest() -> None:
    config = ev.updated(
        ev.SessionConfig(),
        {
            "type": "transcription",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 16000},
                    "transcription": {"model": "tiny.en", "language": "en", "prompt": "Sona"},
                    "turn_detection": {"type": "server_vad", "silence_duration_ms": 800},
                }
            },
        },
    )
    assert (config.model, config.language, config.prompt, config.rate) == (
        "tiny.en",
        "en",
        "Sona",
        16000,
    )
    assert config.turn_detection == ev.ServerVad(silence_duration_ms=800)
    off = ev.updated(
        config, {"type": "transcription", "audio": {"input": {"turn_detection": None}}}
    )
    assert off.turn_detection is None and off.language == "en"


@pytest.mark.parametrize(
    "session",
    [
        {"type": "realtime"},
        {"type": "transcription", "audio": {"input": {"format": {"type": "audio/pcma"}}}},
        {
            "type": "transcription",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 8000}}},
        },
        {"type": "transcription", "audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}},
        {"type": "transcription", "audio": {"input": {"transcription": {"language": 5}}}},
        "not an object",
    ],
)
def test_session_update_refuses_what_sona_does_not_do(session: Any) -> None:
    with pytest.raises(InvalidRequest):
        ev.updated(ev.SessionConfig(), session)


def test_the_events_built_are_the_sdks() -> None:
    shape = ev.session_shape("sess_1", ev.SessionConfig(), "job_1")
    created = SessionCreatedEvent.model_validate(ev.event("session.created", session=shape))
    assert created.session.type == "transcription"
    for event in (
        ev.event("session.updated", session=shape),
        ev.event("input_audio_buffer.committed", item_id="i", previous_item_id=None),
        ev.event("input_audio_buffer.cleared"),
        ev.event("input_audio_buffer.speech_started", item_id="i", audio_start_ms=0),
        ev.event("input_audio_buffer.speech_stopped", item_id="i", audio_end_ms=10),
        ev.completed("i", "hello", 1.5),
        ev.failed("i", "engine_error", "boom"),
        ev.error("invalid_json", "bad", about="evt_1"),
    ):
        SERVER_EVENT.validate_python(event)


class _Conn:
    def send(self, msg: object) -> None: ...


def test_a_live_turn_goes_before_every_queued_step() -> None:
    engine = EngineProcess(_Conn(), EngineConfig(), backend=None)  # type: ignore[arg-type]
    item = ChunkInfo("job", 0, 0, 0.0, 1.0)
    for req in range(3):
        engine._dispatch(Step(req, "m", [item]))
    audio = np.zeros(RATE, np.float32)
    engine._dispatch(Transcribe(9, "m", TranscribeOptions(), audio))
    order = []
    while True:
        try:
            order.append(engine._steps.get_nowait()[2].req)
        except queue.Empty:
            break
    assert order == [9, 0, 1, 2]


def test_turns_waiting_together_are_taken_as_one_batch() -> None:
    """Turns of the same model and options go together; another's, and the
    steps behind them, stay queued in their order."""
    pending: queue.PriorityQueue[Any] = queue.PriorityQueue()
    audio = np.zeros(RATE, np.float32)
    english, french = TranscribeOptions(language="en"), TranscribeOptions(language="fr")
    items = [
        (0, 1, Transcribe(1, "m", english, audio)),
        (0, 2, Transcribe(2, "m", french, audio)),
        (0, 3, Transcribe(3, "m", english, audio)),
        (1, 4, Step(4, "m", [ChunkInfo("job", 0, 0, 0.0, 1.0)])),
    ]
    for item in items:
        pending.put(item)
    first = pending.get_nowait()[2]
    assert [t.req for t in take_turns(first, pending)] == [1, 3]
    assert [pending.get_nowait()[2].req for _ in range(2)] == [2, 4]


def test_partial_text_sends_only_words_two_decodes_agree_on() -> None:
    partial = PartialText()
    assert partial.interim("The quick") is None  # nothing to agree with yet
    assert partial.interim("The quick brown fox") == "The quick"  # "brown" may be cut
    assert partial.interim("The quick brown fax jumps") == " brown"
    assert partial.interim("The quick brown fox jumps over") is None  # disagrees at "fox"
    assert partial.final("The quick brown fox jumps over the lazy dog.") == (
        " fox jumps over the lazy dog."
    )
    assert partial.sent == ["The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog."]


def test_a_final_text_that_disagrees_adds_nothing() -> None:
    partial = PartialText()
    partial.interim("one two three")
    assert partial.interim("one two three four") == "one two three"
    assert partial.final("won two three four") is None
    assert PartialText().final("all of it") == "all of it"  # no partials: one delta
