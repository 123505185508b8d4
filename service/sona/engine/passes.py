"""Decoding a batch of windows in passes, until each one's text reaches its end.

The first pass decodes every window of a batch side by side (encoder, then
decoder with timestamp tokens). A window whose text stopped early
(``tails.settle``) is decoded again from where it stopped, all such windows in
one more batched pass, at most ``EXTRA_PASSES`` more. An extra pass can be
prompted with the text its window decoded so far (``CONDITION_TAILS``), as
faster-whisper's sequential decode prompts each window with the text before
it; measured, that did not win (docs/performance.md), so it is off.

A batch can be *fitted* (the engine's ``fit_windows``, on by default, for
jobs' batches and live turns alike): the encoder reads the audio, rounded up
to ``FIT_STEP_FRAMES``, and a second of silence, at least ``FIT_MIN_FRAMES``,
instead of 30 s, of which a 20 s chunk is a third padding and a 5 s turn five
sixths. The encoder's cost grows with its input (10 s cost tiny.en a fifth
of 30 s), and the text read is the same, word for word or within noise
(docs/performance.md, "Fitted windows").
Whisper was trained on 30 s windows, so a window whose fitted pass runs away
(stops at its token cap, repeats itself as faster-whisper's fallback measures
it, or ends in a loop) is decoded again over the full window, alone.

Drives the model it is given (``engine/whisper.py``'s); imports no ML library
itself. Words come back in window time: aligned where asked, else spread over
the model's own timestamps."""

from __future__ import annotations

import bisect
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from math import ceil
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from sona.engine.batcher import PACK_GAP_S
from sona.engine.chunker import SAMPLE_RATE
from sona.engine.tails import pieces, settle

log = structlog.get_logger("sona.engine")

if TYPE_CHECKING:
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import TranscriptionOptions

    from sona.engine.whisper import StoppableModel

# A window whose text stopped early is decoded again from there, at most this
# many times: each extra pass is one more batched encode + decode.
EXTRA_PASSES = 2
# Prompt an extra pass with its window's text so far (the last tokens of it).
# Off: the same WER with 20 s chunks, worse WER and more CPU with 30 s ones.
CONDITION_TAILS = False
# Pack the tails of several stopped windows into one encoder window for an
# extra pass (each tail otherwise costs a whole 30 s window). Off: it pays with
# 30 s chunks, which stay off (docs/performance.md).
PACK_TAILS = False
# Whisper's encoder reads 30 s of 10 ms frames.
ENCODER_FRAMES = 3000
SAMPLES_PER_FRAME = SAMPLE_RATE // 100
# A fitted window: its audio rounded up to a whole 2.5 s, then this much
# silence (1 s), and 10 s at least. Shorter inputs (no floor, or no silence
# after the speech) repeated a sentence or misread words on the test clips;
# these read as the full window did. The rounding lets windows of nearly one
# length share one encoder and one decoder call (a job's chunks are mostly
# 17.5-20 s: one width, 21 s); a width to the frame gave each window of a step
# its own calls: at beam 5 a fifth more CPU in batches of 2, half again more
# in batches of 8 (docs/performance.md, "Widths in steps of 2.5 s").
FIT_PAD_FRAMES = 100
FIT_MIN_FRAMES = 1000
FIT_STEP_FRAMES = 250
# A fitted pass's decoder stops at this length per second of window, plus a
# few: a runaway stops early. Generous (speech is about 4 tokens a second;
# CTranslate2 counts the prompt, and read about half this many on the clips).
FIT_TOKENS_PER_S = 20
FIT_TOKENS_BASE = 32
# Text this repetitive is a runaway (faster-whisper's compression_ratio_threshold).
RUNAWAY_COMPRESSION = 2.4
# ... or text that ends in a loop: a few tokens said over and over.
LOOP_PERIOD = 4
LOOP_REPEATS = 8


Todo = tuple[int, float]  # a window, and where its audio is decoded from


class Stopped(Exception):
    """Every job of the batch in flight was closed: its remaining stages are skipped."""


@dataclass(frozen=True)
class Window:
    """Audio decoded as one encoder input; ``align``: its words are aligned
    (asked for, or needed to hand each word back to the chunk it was spoken in)."""

    audio: np.ndarray
    align: bool


@dataclass
class _Read:
    """What one pass read of one window: its words, the tokens kept, and the
    window time to decode it again from (None: its text reached the end)."""

    words: list[dict[str, Any]]
    tokens: list[int]
    resume: float | None


def decode_windows(
    model: StoppableModel,
    tokenizer: Tokenizer,
    options: TranscriptionOptions,
    windows: Sequence[Window],
    *,
    fit: bool = False,
) -> list[list[dict[str, Any]]]:
    """Per window its words (dicts as faster-whisper's aligner makes them, plus
    ``avg_logprob``, ``no_speech_prob`` and ``closes``: the model ended a
    timestamp segment after it), in window time. ``fit``: the encoder reads
    the batch's audio, not 30 s (above)."""
    found: list[list[dict[str, Any]]] = [[] for _ in windows]
    said: list[list[int]] = [[] for _ in windows]  # tokens each window decoded so far
    todo = [(n, 0.0) for n in range(len(windows))]  # (window, where its audio is decoded from)
    for extra in range(EXTRA_PASSES + 1):
        if extra and model.stop():
            raise Stopped
        groups = _packed(windows, todo) if extra and PACK_TAILS else [[t] for t in todo]
        batch = [_joined(windows, g) for g in groups]
        previous = [said[g[0][0]] for g in groups] if extra and CONDITION_TAILS else None
        reads = _pass(
            model, tokenizer, options, [w for w, _ in batch], previous,
            final=extra == EXTRA_PASSES, fit=fit,
        )  # fmt: skip
        todo = []
        for group, (_, offsets), read in zip(groups, batch, reads, strict=True):
            todo += _hand_back(group, offsets, read, found)
            if len(group) == 1:  # a shared window's tokens are no one window's text
                said[group[0][0]] += read.tokens
        if not todo:
            break
    return found


def _packed(windows: Sequence[Window], todo: list[tuple[int, float]]) -> list[list[Todo]]:
    """The tails to decode again, packed in order into windows of at most 30 s."""
    groups: list[list[Todo]] = []
    size = 0.0
    for n, at in todo:
        length = windows[n].audio.size / SAMPLE_RATE - at
        if groups and size + PACK_GAP_S + length <= ENCODER_FRAMES / 100:
            groups[-1].append((n, at))
            size += PACK_GAP_S + length
        else:
            groups.append([(n, at)])
            size = length
    return groups


def _joined(windows: Sequence[Window], group: list[Todo]) -> tuple[Window, list[float]]:
    """One encoder window of ``group``'s audio, a gap of silence apart, and
    where each part starts in it. A shared window's words are aligned: each
    goes back to its part by its time."""
    if len(group) == 1:
        [(n, at)] = group
        return Window(windows[n].audio[int(at * SAMPLE_RATE) :], windows[n].align), [0.0]
    gap = np.zeros(int(PACK_GAP_S * SAMPLE_RATE), np.float32)
    parts: list[np.ndarray] = []
    offsets: list[float] = []
    t = 0.0
    for n, at in group:
        audio = windows[n].audio[int(at * SAMPLE_RATE) :]
        parts += [gap, audio] if parts else [audio]
        t += PACK_GAP_S if offsets else 0.0
        offsets.append(t)
        t += audio.size / SAMPLE_RATE
    return Window(np.concatenate(parts), True), offsets


def _hand_back(
    group: list[Todo], offsets: list[float], read: _Read, found: list[list[dict[str, Any]]]
) -> list[Todo]:
    """A pass's words back to the windows they were spoken in (in window time),
    and what is left to decode: from where the text stopped, and the parts of a
    shared window after it whole."""

    def part(t: float) -> int:
        return max(0, bisect.bisect_right(offsets, t) - 1)

    for w in read.words:
        k = part((w["start"] + w["end"]) / 2 + PACK_GAP_S / 2)
        n, at = group[k]
        found[n].append(_shifted(w, at - offsets[k]))
    if read.resume is None:
        return []
    k = part(read.resume)
    n, at = group[k]
    return [(n, at + read.resume - offsets[k]), *group[k + 1 :]]


def _pass(
    model: StoppableModel,
    tokenizer: Tokenizer,
    options: TranscriptionOptions,
    windows: list[Window],
    previous: list[list[int]] | None,
    *,
    final: bool,
    fit: bool = False,
) -> list[_Read]:
    """One batched pass (encoder, decoder with timestamps, word alignment where
    asked) over ``windows``, each prompted with its ``previous`` tokens;
    ``fit``: each window over its own length, and a window whose fitted pass
    runs away decoded again over 30 s (the others keep their fitted reading).
    A window's width comes from its own audio alone, never from the batch it
    is in: it reads the same in any batch (a resume, a cancelled neighbour).
    Windows of one width share the encoder and decoder calls."""
    widths = [
        fitted_frames(w.audio.size // SAMPLES_PER_FRAME) if fit else ENCODER_FRAMES for w in windows
    ]
    reads: list[_Read | None] = [None] * len(windows)

    def read(group: list[int], width: int) -> None:
        got = _read(
            model, tokenizer, options, [windows[n] for n in group],
            None if previous is None else [previous[n] for n in group], width, final,
        )  # fmt: skip
        for n, one in zip(group, got, strict=True):
            reads[n] = one

    for width in sorted(set(widths)):
        read([n for n, w in enumerate(widths) if w == width], width)
    if wild := [n for n, one in enumerate(reads) if one is None]:
        log.info("engine.fit_runaway", windows=len(wild), of=len(windows))
        read(wild, ENCODER_FRAMES)
    return [read for read in reads if read is not None]


def _read(
    model: StoppableModel,
    tokenizer: Tokenizer,
    options: TranscriptionOptions,
    windows: list[Window],
    previous: list[list[int]] | None,
    frames: int,
    final: bool,
) -> list[_Read | None]:
    """``_pass`` over ``frames`` encoder frames; None for a window whose
    fitted pass ran away (a 30 s pass never does: the model's own limits)."""
    features = np.stack([_frames(model, w.audio, frames) for w in windows])
    encoder_output = model.encode(features)
    cap = token_cap(frames) if frames < ENCODER_FRAMES else None  # a 30 s window: the model's
    outputs = _generate(model, tokenizer, options, encoder_output, previous, len(windows), cap)
    kept: list[list[dict[str, Any]]] = []
    reads: list[_Read | None] = []
    for window, output in zip(windows, outputs, strict=True):
        if cap is not None and _runaway(output["tokens"], tokenizer):
            kept.append([])  # aligns nothing
            reads.append(None)
            continue
        found = pieces(output["tokens"], tokenizer.timestamp_begin, tokenizer.eot)
        counts = [len(tokenizer.decode(p.tokens).split()) for p in found]
        keep, resume = settle(found, window.audio.size / SAMPLE_RATE, counts, final=final)
        subs: list[dict[str, Any]] = [
            {"tokens": p.tokens, "start": p.start, "end": p.end, "seek": 0} for p in keep
        ]
        for sub in subs if not window.align else []:
            sub["words"] = _spread(sub, tokenizer)
        kept.append(subs)
        reads.append(_Read([], [t for p in keep for t in p.tokens], resume))
    if any(w.align for w in windows):
        _align(model, tokenizer, options, encoder_output, windows, kept)
    for subsegments, output, read in zip(kept, outputs, reads, strict=True):
        if read is None:
            continue
        stats = {"avg_logprob": output["avg_logprob"], "no_speech_prob": output["no_speech_prob"]}
        for sub in subsegments:
            got = sub.get("words") or []
            read.words += [{**w, **stats, "closes": n == len(got) - 1} for n, w in enumerate(got)]
    return reads


def _generate(
    model: StoppableModel,
    tokenizer: Tokenizer,
    options: TranscriptionOptions,
    encoder_output: Any,
    previous: list[list[int]] | None,
    size: int,
    max_new: int | None = None,
) -> list[dict[str, Any]]:
    """The decoder over a batch, as ``BatchedInferencePipeline`` runs it, but
    with a prompt per window: the job's prompt, then its window's text so far;
    at most ``max_new`` tokens after it (else the model's length)."""
    base = tokenizer.encode(options.initial_prompt) if options.initial_prompt else []
    texts = [base + p for p in previous] if previous is not None else [base] * size
    # CTranslate2 wants start-of-transcript at one position in every row: the
    # prompts keep the same number of their last tokens.
    keep = min(len(t) for t in texts)
    prompts = [
        model.get_prompt(
            tokenizer,
            previous_tokens=t[len(t) - keep :] if keep else [],
            without_timestamps=options.without_timestamps,
            hotwords=options.hotwords,
        )
        for t in texts
    ]
    limit = min(model.max_length, len(prompts[0]) + max_new) if max_new else model.max_length
    results = model.model.generate(
        encoder_output,
        prompts,
        beam_size=options.beam_size,
        patience=options.patience,
        length_penalty=options.length_penalty,
        max_length=limit,
        suppress_blank=options.suppress_blank,
        suppress_tokens=options.suppress_tokens,
        return_scores=True,
        return_no_speech_prob=True,
        sampling_temperature=options.temperatures[0],
        repetition_penalty=options.repetition_penalty,
        no_repeat_ngram_size=options.no_repeat_ngram_size,
    )
    out = []
    for result in results:
        tokens = result.sequences_ids[0]
        total = result.scores[0] * (len(tokens) ** options.length_penalty)
        out.append(
            {
                "tokens": tokens,
                "avg_logprob": total / (len(tokens) + 1),
                "no_speech_prob": result.no_speech_prob,
            }
        )
    return out


def _align(
    model: StoppableModel,
    tokenizer: Tokenizer,
    options: TranscriptionOptions,
    encoder_output: Any,
    windows: list[Window],
    kept: list[list[dict[str, Any]]],
) -> None:
    """Word times from the aligner, into ``kept``'s pieces where asked."""
    # The aligner takes every window of the batch; an empty entry aligns nothing.
    nothing: list[dict[str, Any]] = [{"tokens": [], "start": 0.0, "end": 0.0, "seek": 0}]
    aligned = [subs if subs and w.align else nothing for subs, w in zip(kept, windows, strict=True)]
    sizes = [int(ceil(w.audio.size / SAMPLE_RATE) * model.frames_per_second) for w in windows]
    model.add_word_timestamps(
        aligned, tokenizer, encoder_output, sizes, options.prepend_punctuations,
        options.append_punctuations, 0.0,
    )  # fmt: skip


def _frames(model: StoppableModel, audio: np.ndarray, frames: int = ENCODER_FRAMES) -> np.ndarray:
    """The encoder's input: log-mel frames, padded with zeros or cut to ``frames``."""
    mel = model.feature_extractor(audio)[..., :-1][..., :frames]
    return np.pad(mel, ((0, 0), (0, frames - mel.shape[-1])))


def fitted_frames(frames: int) -> int:
    """The encoder frames a fitted window of ``frames`` frames of audio reads:
    its own length alone decides (never its batch's), in steps that let
    windows of nearly one length share a pass."""
    rounded = -(-frames // FIT_STEP_FRAMES) * FIT_STEP_FRAMES
    return min(ENCODER_FRAMES, max(FIT_MIN_FRAMES, rounded + FIT_PAD_FRAMES))


def token_cap(frames: int) -> int:
    """The most tokens a fitted pass over ``frames`` decodes."""
    return FIT_TOKENS_BASE + FIT_TOKENS_PER_S * frames // 100


def _runaway(tokens: list[int], tokenizer: Tokenizer) -> bool:
    """A fitted pass whose text did not close (stopped at its token cap, or
    mid-word), or repeats itself: all of it, or in a loop at its end
    (``sub-b-b-b-b…``)."""
    if tokens and tokens[-1] < tokenizer.timestamp_begin:
        return True
    text = [t for t in tokens if t < tokenizer.eot]
    if looping(text):
        return True
    words = tokenizer.decode(text)
    return bool(words) and compression_ratio(words) > RUNAWAY_COMPRESSION


def looping(tokens: list[int]) -> bool:
    """The text ends in one to ``LOOP_PERIOD`` tokens repeated ``LOOP_REPEATS``
    times or more in a row."""
    for period in range(1, LOOP_PERIOD + 1):
        tail = tokens[-period:]
        repeats = 0
        while (
            len(tokens) >= (repeats + 1) * period
            and tokens[len(tokens) - (repeats + 1) * period : len(tokens) - repeats * period]
            == tail
        ):
            repeats += 1
        if repeats >= LOOP_REPEATS:
            return True
    return False


def compression_ratio(text: str) -> float:
    """Repetition, as faster-whisper's ``get_compression_ratio`` measures it:
    bytes over zlib-compressed bytes."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data))


def _spread(sub: dict[str, Any], tokenizer: Tokenizer) -> list[dict[str, Any]]:
    """A piece's words timed without the aligner: spread over the piece's own
    timestamps by length. Its ends are the model's; inner cuts are estimates."""
    words, _ = tokenizer.split_to_word_tokens(sub["tokens"])
    words = [w for w in words if w]
    total = sum(len(w) for w in words) or 1
    out: list[dict[str, Any]] = []
    at, step = sub["start"], (sub["end"] - sub["start"]) / total
    for w in words:
        out.append({"word": w, "start": at, "end": at + len(w) * step, "probability": 0.0})
        at += len(w) * step
    return out


def _shifted(word: dict[str, Any], at: float) -> dict[str, Any]:
    # numpy floats from the aligner become plain ones: segments are serialised.
    return {**word, "start": float(word["start"]) + at, "end": float(word["end"]) + at}
