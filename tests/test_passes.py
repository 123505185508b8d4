"""engine/passes.py with the real model: an extra pass is prompted with the
text its window decoded before the cut, windows whose earlier texts differ
in length share one batched pass, a fitted window (a live turn) encodes
its own length, falling back to 30 s when it runs away, and a CPU batch is
encoded window by window."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer

from sona import audio
from sona.engine import EngineConfig, JobSpec, passes
from sona.engine.child import EngineProcess, _Job
from sona.engine.chunker import Chunker, RawChunk
from sona.engine.live_turns import transcribe_turns
from sona.engine.messages import ChunkInfo, Step, Transcribe
from sona.engine.registry import bundled_model_path
from sona.engine.whisper import WhisperBackend, _options, speech_detector
from sona.formats import full_text
from sona.jobs import TranscribeOptions
from tests.test_engine import early_stop_window

AUDIO = Path(__file__).parent / "audio"


@pytest.fixture(scope="module")
def backend() -> WhisperBackend:
    backend = WhisperBackend(device="cpu", compute_type="auto", cpu_threads=0)
    backend.load("tiny.en", bundled_model_path())
    return backend


def prompts_seen(backend: WhisperBackend, monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The earlier text each call of the model's prompt builder was given."""
    model = backend._model("tiny.en")
    seen: list[list[int]] = []
    build = model.get_prompt

    def spy(tokenizer: Any, previous_tokens: list[int], **kwargs: Any) -> list[int]:
        seen.append(list(previous_tokens))
        return build(tokenizer, previous_tokens, **kwargs)

    monkeypatch.setattr(model, "get_prompt", spy)
    return seen


@pytest.mark.parametrize("condition", [True, False])
def test_an_extra_pass_is_prompted_with_its_window_s_text_before_the_cut(
    backend: WhisperBackend,
    monkeypatch: pytest.MonkeyPatch,
    manifest: dict[str, Any],
    condition: bool,
) -> None:
    """fox.wav, silence, report.wav, weather.wav: the text stops after report.wav
    and the rest is decoded again, prompted with what was read before it, or
    with nothing when ``CONDITION_TAILS`` is off. Either way every clip is read."""
    monkeypatch.setattr(passes, "CONDITION_TAILS", condition)
    seen = prompts_seen(backend, monkeypatch)
    [[segments]] = backend.decode("tiny.en", TranscribeOptions(), "en", early_stop_window())
    text = full_text(segments).lower()
    for name in ("fox.wav", "report.wav", "weather.wav"):
        assert all(k in text for k in manifest[name]["keywords"]), (name, text)
    first, *extra = seen
    assert first == [] and extra, seen  # one window: one prompt a pass
    model = backend._model("tiny.en")
    tokenizer = Tokenizer(model.hf_tokenizer, False, task="transcribe", language="en")
    earlier = tokenizer.decode(extra[0]).lower()
    if condition:
        assert "fox" in earlier and "breeze" not in earlier, earlier
    else:
        assert earlier == ""


def test_windows_whose_earlier_texts_differ_in_length_share_a_pass(
    backend: WhisperBackend, manifest: dict[str, Any]
) -> None:
    """CTranslate2 wants start-of-transcript at one position in every row of a
    batch: prompts of different lengths keep the same number of last tokens,
    and each window still reads its own clip."""
    model = backend._model("tiny.en")
    tokenizer = Tokenizer(model.hf_tokenizer, False, task="transcribe", language="en")
    names = ("weather.wav", "fox.wav")
    clips = [audio.decode(AUDIO / n, max_seconds=60) for n in names]
    features = np.stack([passes._frames(model, c) for c in clips])
    long = tokenizer.encode(" " + manifest["report.wav"]["text"])
    short = tokenizer.encode(" Then,")
    out = passes._generate(
        model,
        tokenizer,
        _options(TranscribeOptions(), tokenizer),
        model.encode(features),
        [long, short],
        len(clips),
    )
    for name, other, got in zip(names, reversed(names), out, strict=True):
        read = tokenizer.decode([t for t in got["tokens"] if t < tokenizer.eot]).lower()
        # Its own clip, give or take a word the prompt steers (tiny.en read
        # fox.wav's "dog" as "log" after " Then," on one machine's threads).
        heard = [k for k in manifest[name]["keywords"] if k in read]
        assert len(heard) >= len(manifest[name]["keywords"]) - 1, (name, read)
        assert not any(k in read for k in manifest[other]["keywords"]), (name, read)


def test_packed_tails_share_one_extra_window_and_each_keeps_its_words(
    backend: WhisperBackend, monkeypatch: pytest.MonkeyPatch, manifest: dict[str, Any]
) -> None:
    """Two windows that stop early the same way: with ``PACK_TAILS`` their
    tails are decoded in one encoder window, and each window still gets its
    own weather sentence back, timed where it is said."""
    monkeypatch.setattr(passes, "PACK_TAILS", True)
    sizes: list[int] = []
    run = passes._pass

    def counted(*args: Any, **kwargs: Any) -> Any:
        sizes.append(len(args[3]))
        return run(*args, **kwargs)

    monkeypatch.setattr(passes, "_pass", counted)
    [row] = early_stop_window()
    got = backend.decode("tiny.en", TranscribeOptions(), "en", [row, row])
    assert sizes[:2] == [2, 1], sizes  # two windows, then both tails in one
    for [segments] in got:
        text = full_text(segments).lower()
        for name in ("fox.wav", "report.wav", "weather.wav"):
            assert all(k in text for k in manifest[name]["keywords"]), (name, text)
        [weather] = [s for s in segments if "breeze" in s.text]
        assert weather.start > 7 + 12 + 3


def encoded_frames(backend: WhisperBackend, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The frames each encoder call of the batch reads."""
    model = backend._model("tiny.en")
    seen: list[int] = []
    encode = model.encode

    def spy(features: np.ndarray) -> Any:
        seen.append(features.shape[-1])
        return encode(features)

    monkeypatch.setattr(model, "encode", spy)
    return seen


def fox_then_report() -> np.ndarray:
    """fox.wav then report.wav: 11.4 s of speech in two voices."""
    return np.concatenate(
        [audio.decode(AUDIO / n, max_seconds=60) for n in ("fox.wav", "report.wav")]
    )


def one_chunk(name: str) -> list[list[RawChunk]]:
    clip = audio.decode(AUDIO / name, max_seconds=60)
    return [[RawChunk(clip, [(0, clip.size)])]]


def test_a_fitted_window_encodes_its_own_length_and_reads_as_the_full_one(
    backend: WhisperBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """numbers.wav (5.4 s) fitted: the encoder reads 10 s (the floor), not
    30 s, and the text is the full window's, word for word."""
    seen = encoded_frames(backend, monkeypatch)
    rows = one_chunk("numbers.wav")
    [[full]] = backend.decode("tiny.en", TranscribeOptions(), "en", rows)
    [[fitted]] = backend.decode("tiny.en", TranscribeOptions(), "en", rows, fit=True)
    assert seen == [passes.ENCODER_FRAMES, passes.FIT_MIN_FRAMES]
    assert full_text(fitted) == full_text(full)
    assert fitted[-1].end == pytest.approx(full[-1].end, abs=0.5)


def test_a_fitted_pass_that_runs_away_is_decoded_again_over_30_s(
    backend: WhisperBackend, monkeypatch: pytest.MonkeyPatch, manifest: dict[str, Any]
) -> None:
    """A fitted pass that stops at its token cap (here a few tokens: fox.wav's
    sentences need more) did not close its text: the window is decoded again
    over 30 s, and every word comes back."""
    monkeypatch.setattr(passes, "FIT_TOKENS_PER_S", 0)
    monkeypatch.setattr(passes, "FIT_TOKENS_BASE", 8)
    seen = encoded_frames(backend, monkeypatch)
    [[segments]] = backend.decode(
        "tiny.en", TranscribeOptions(), "en", one_chunk("fox.wav"), fit=True
    )
    assert seen == [passes.FIT_MIN_FRAMES, passes.ENCODER_FRAMES]
    text = full_text(segments).lower()
    assert all(k in text for k in manifest["fox.wav"]["keywords"]), text


def test_a_live_turn_is_decoded_in_a_fitted_window(
    backend: WhisperBackend, monkeypatch: pytest.MonkeyPatch, manifest: dict[str, Any]
) -> None:
    """``transcribe_turns`` (the engine's live turns) fits its batch: a 7 s turn
    is encoded as 8.2 s (its speech and a second of silence), not 30 s."""
    seen = encoded_frames(backend, monkeypatch)
    clip = audio.decode(AUDIO / "fox.wav", max_seconds=60)
    options = TranscribeOptions()
    turn = Transcribe(0, "tiny.en", options, clip)
    detector = lambda: Chunker(speech_detector(20.0, options), max_s=20.0)  # noqa: E731
    [(language, segments)] = transcribe_turns(backend, detector, [turn], fit=True)
    assert language == "en"
    assert len(seen) == 1 and passes.FIT_MIN_FRAMES <= seen[0] < passes.ENCODER_FRAMES, seen
    text = full_text(segments).lower()
    assert all(k in text for k in manifest["fox.wav"]["keywords"]), text


def test_text_ending_in_a_loop_is_a_runaway(backend: WhisperBackend) -> None:
    model = backend._model("tiny.en")
    tokenizer = Tokenizer(model.hf_tokenizer, False, task="transcribe", language="en")
    said = tokenizer.encode(" to use, copy, modify, merge, publish, distribute, sub")
    loop = said + tokenizer.encode("-b") * passes.LOOP_REPEATS
    assert passes.looping(loop)
    closed = [tokenizer.timestamp_begin, *said, tokenizer.timestamp_begin + 150]
    assert passes._runaway([*loop, tokenizer.timestamp_begin + 150], tokenizer)
    assert not passes.looping(said)
    assert not passes._runaway(closed, tokenizer)
    assert passes._runaway(closed[:-1], tokenizer)  # stopped before it closed
    assert passes.looping(tokenizer.encode(" no") * passes.LOOP_REPEATS)
    assert not passes.looping(tokenizer.encode(" no") * (passes.LOOP_REPEATS - 1))


class _Conn:
    def send(self, msg: object) -> None: ...


@pytest.mark.parametrize("fit", [True, False])
def test_a_job_s_engine_step_reads_fitted_windows_unless_turned_off(
    backend: WhisperBackend, monkeypatch: pytest.MonkeyPatch, fit: bool
) -> None:
    """The engine process's step over a job's chunk (fox.wav, 7 s) reads a
    fitted window with ``fit_windows`` (the default: 8.2 s, its audio and a
    second of silence) and the full 30 s without; the text is the same."""
    seen = encoded_frames(backend, monkeypatch)
    engine = EngineProcess(_Conn(), EngineConfig(fit_windows=fit), backend)  # type: ignore[arg-type]
    clip = audio.decode(AUDIO / "fox.wav", max_seconds=60)
    spec = JobSpec("job", AUDIO / "fox.wav", TranscribeOptions(), "tiny.en", 60, True, 1)
    job = engine.jobs["job"] = _Job(spec)
    job.language = "en"
    job.put(0, RawChunk(clip, [(0, clip.size)]), ahead=1)
    [segments] = engine._step(Step(1, "tiny.en", [ChunkInfo("job", 0, 0, 0.0, clip.size / 16_000)]))
    assert EngineConfig().fit_windows  # the default
    width = passes.fitted_frames(clip.size // passes.SAMPLES_PER_FRAME)
    assert seen == [width if fit else passes.ENCODER_FRAMES], seen
    assert width < passes.ENCODER_FRAMES
    assert "quick brown fox" in full_text(segments).lower()


def test_a_fitted_window_reads_the_same_alone_and_beside_a_longer_one(
    backend: WhisperBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A window's width is its own (numbers.wav: the 10 s floor), not its
    batch's longest (13 s of fox.wav and report.wav beside it): the same
    chunk reads the same whatever it is batched with — as a resume or a
    cancelled neighbour needs."""
    seen = encoded_frames(backend, monkeypatch)
    [alone] = one_chunk("numbers.wav")
    pair = fox_then_report()
    longer = [RawChunk(pair, [(0, pair.size)])]
    [[by_itself]] = backend.decode("tiny.en", TranscribeOptions(), "en", [alone], fit=True)
    [[beside], _] = backend.decode("tiny.en", TranscribeOptions(), "en", [alone, longer], fit=True)
    assert seen[0] == seen[1] == passes.FIT_MIN_FRAMES
    assert seen[2] == passes.fitted_frames(pair.size // passes.SAMPLES_PER_FRAME) > seen[1]
    assert [(s.text, s.start, s.end) for s in beside] == [
        (s.text, s.start, s.end) for s in by_itself
    ]


def test_fitted_windows_of_nearly_one_length_share_one_encoder_call(
    backend: WhisperBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two windows 11.4 s and 10.9 s long are fitted to one width (each its
    own length rounded up to a whole step, and a second): one encoder input
    holds both, and one decoder call reads them. With a width to the frame
    each window took its own calls."""
    seen = encoded_frames(backend, monkeypatch)
    pair = fox_then_report()
    shorter = pair[: pair.size - 8_000]
    widths = {passes.fitted_frames(a.size // passes.SAMPLES_PER_FRAME) for a in (pair, shorter)}
    rows = [[RawChunk(a, [(0, a.size)])] for a in (pair, shorter)]
    got = backend.decode("tiny.en", TranscribeOptions(), "en", rows, fit=True)
    assert len(widths) == 1 and seen == list(widths), seen
    assert all("quick brown fox" in full_text(segments).lower() for [segments] in got)


def test_a_fitted_width_is_the_audio_rounded_up_to_a_step_and_a_second() -> None:
    assert passes.fitted_frames(300) == passes.FIT_MIN_FRAMES  # a short turn: the floor
    assert passes.fitted_frames(1251) == passes.fitted_frames(1500) == 1600
    assert passes.fitted_frames(1751) == passes.fitted_frames(2000) == 2100  # a job's chunks
    assert passes.fitted_frames(2001) == 2350
    assert passes.fitted_frames(2800) == passes.ENCODER_FRAMES  # never past 30 s


def base_encoder_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """Each call of faster-whisper's own encoder, by its input's leading
    dimensions: ``(windows,)`` for a batch, ``()`` for one window's 2-D frames."""
    seen: list[tuple[int, ...]] = []
    encode = WhisperModel.encode

    def spy(self: Any, batch: np.ndarray) -> Any:
        seen.append(batch.shape[:-2])
        return encode(self, batch)

    monkeypatch.setattr(WhisperModel, "encode", spy)
    return seen


def test_on_a_cpu_a_batch_is_encoded_window_by_window_into_one_output(
    backend: WhisperBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The encoder reads a batch one window at a time on a CPU (cheaper there
    than the batch at once) and the decoder gets one output for the batch:
    the numbers faster-whisper's encoder gives for the whole batch."""
    model = backend._model("tiny.en")
    pair = fox_then_report()
    features = np.stack([passes._frames(model, a, 1600) for a in (pair, pair[::-1])])
    batched = np.asarray(WhisperModel.encode(model, features))
    seen = base_encoder_calls(monkeypatch)
    joined = np.asarray(model.encode(features))
    assert seen == [(1,), (1,)]
    assert joined.shape == batched.shape == (2, 800, 384)
    np.testing.assert_allclose(joined, batched, atol=1e-3)
    # faster-whisper's own calls (sequential decoding) pass one window's 2-D frames.
    single = np.asarray(model.encode(features[0]))
    assert single.shape == (1, 800, 384) and seen == [(1,), (1,), ()]
    np.testing.assert_allclose(single[0], batched[0], atol=1e-3)


def test_a_cancel_stops_a_cpu_batch_s_encoder_after_the_window_in_hand(
    backend: WhisperBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch's jobs were all closed while its first window was encoded:
    the second window is never read."""
    model = backend._model("tiny.en")
    features = np.stack([passes._frames(model, fox_then_report(), 1600)] * 2)
    seen = base_encoder_calls(monkeypatch)
    with model.stoppable(lambda: bool(seen)), pytest.raises(passes.Stopped):
        model.encode(features)
    assert seen == [(1,)]
