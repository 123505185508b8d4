"""The faster-whisper backend: the only module that imports faster_whisper.

It runs inside the engine process (``engine/child.py``): it loads models,
finds speech with Silero VAD, and decodes a batch of chunks with
faster-whisper's encoder and decoder, as ``BatchedInferencePipeline`` does but
with timestamp tokens on and extra passes for windows whose text stopped early
(``passes``); every chunk's words go back to it, cut into sentence-sized
segments (``segmenting``)."""

from __future__ import annotations

import bisect
import contextlib
import gc
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import (
    TranscriptionOptions,
    get_compression_ratio,
    get_suppressed_tokens,
)
from faster_whisper.utils import download_model
from faster_whisper.vad import VadOptions, get_speech_timestamps

from sona.engine import Detection, resolve_device
from sona.engine.batcher import PACK_GAP_S
from sona.engine.chunker import SAMPLE_RATE, RawChunk, Spans
from sona.engine.passes import Stopped, Window, decode_windows
from sona.engine.segmenting import Timed, sentences
from sona.errors import (
    ModelLoadFailed,
    ModelNotFound,
    UnsupportedLanguage,
    english_only_message,
)
from sona.jobs import Segment, TranscribeOptions, Word

__all__ = ["Stopped", "WhisperBackend", "download", "speech_detector", "vad_options"]

# faster-whisper's fallback schedule, for sequential decoding without a fixed temperature.
_FALLBACK = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def resolve_compute_type(compute_type: str, device: str) -> str:
    """``auto``: int8 on a CPU, float16 on CUDA. The model's saved float16 would
    otherwise run as float32 on a CPU, at a third of int8's speed."""
    if compute_type != "auto":
        return compute_type
    return "float16" if resolve_device(device) == "cuda" else "int8"


def download(name: str, cache_dir: Path) -> Path:
    """Fetch a model by name from the model hub; ``ModelNotFound`` if impossible."""
    try:
        return Path(download_model(name, cache_dir=str(cache_dir)))
    except Exception as exc:  # hub errors come in many types; all mean "not here"
        raise ModelNotFound(f"model {name!r} could not be downloaded: {exc}") from exc


def vad_options(options: TranscribeOptions, **base: Any) -> VadOptions:
    """Silero's settings for a job: what it asked for over ``base`` (over
    faster-whisper's defaults)."""
    asked = {
        "threshold": options.vad_threshold,
        "min_silence_duration_ms": options.min_silence_duration_ms,
        "speech_pad_ms": options.speech_pad_ms,
    }
    return VadOptions(**{**base, **{k: v for k, v in asked.items() if v is not None}})


def speech_detector(
    chunk_s: float, options: TranscribeOptions | None = None
) -> Callable[[np.ndarray], Spans]:
    """Speech spans of a 16 kHz mono signal, in samples, none longer than
    ``chunk_s``: the job's VAD ``options`` over BatchedInferencePipeline's
    settings (a 160 ms silence ends a span)."""
    vad = vad_options(
        options or TranscribeOptions(), max_speech_duration_s=chunk_s, min_silence_duration_ms=160
    )

    def detect(samples: np.ndarray) -> Spans:
        return [(s["start"], s["end"]) for s in get_speech_timestamps(samples, vad)]

    return detect


class StoppableModel(WhisperModel):
    """faster-whisper's model, with a check between the stages of a batch.

    CTranslate2 cannot interrupt a call, but a batch is three of them: the
    encoder, the decoder, and (with word timestamps) the alignment. When
    ``stop()`` says the batch's jobs are all gone, the next stage does not
    start, so a cancel wastes at most the stage in flight."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batch = threading.local()  # batches run on several threads at once

    def stop(self) -> bool:
        check: Callable[[], bool] | None = getattr(self._batch, "stop", None)
        return check is not None and check()

    @contextlib.contextmanager
    def stoppable(self, stop: Callable[[], bool]) -> Iterator[None]:
        """Check ``stop`` between the stages of what this thread runs inside."""
        self._batch.stop = stop
        try:
            yield
        finally:
            self._batch.stop = None

    def encode(self, features: np.ndarray) -> Any:
        """The batch's encoder output. On a CPU one window at a time, joined
        after: the encoder's attention over a batch outgrows the caches (a
        batch of 2 or 4 cost 15-20 % more than its windows one by one), while
        the decoder after it gains from the whole batch (docs/performance.md,
        "Steps of 4 windows"). On CUDA the batch at once fills the device.
        faster-whisper's own calls (sequential decoding, language detection)
        pass one window, as 2-D frames."""
        if self.model.device == "cpu" and features.ndim == 3 and len(features) > 1:
            one = []
            for n, window in enumerate(features):
                if n and self.stop():  # a cancel waits for one window, not the batch
                    raise Stopped
                one.append(np.asarray(super().encode(window[None])))
            # The view holds a reference to the joined array: it outlives this frame.
            encoded = ctranslate2.StorageView.from_array(np.concatenate(one))
        else:
            encoded = super().encode(features)
        if self.stop():
            raise Stopped
        return encoded

    def add_word_timestamps(self, *args: Any, **kwargs: Any) -> Any:
        if self.stop():
            raise Stopped
        return super().add_word_timestamps(*args, **kwargs)


class WhisperBackend:
    """The models of one engine process, by id."""

    def __init__(
        self, *, device: str, compute_type: str, cpu_threads: int, replicas: int = 1
    ) -> None:
        self.device = resolve_device(device)
        self.compute_type = resolve_compute_type(compute_type, device)
        self.cpu_threads = cpu_threads
        self.replicas = replicas
        self._models: dict[str, StoppableModel] = {}

    def load(self, model_id: str, path: Path) -> None:
        if model_id in self._models:
            return
        try:
            model = StoppableModel(
                str(path),
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=self.cpu_threads,
                num_workers=self.replicas,
                local_files_only=True,
            )
        except Exception as exc:  # a broken directory fails in many ways
            raise ModelLoadFailed(f"model {model_id} did not load: {exc}") from exc
        self._models[model_id] = model

    def unload(self, model_id: str) -> None:
        # CTranslate2 frees the weights when the last reference goes.
        self._models.pop(model_id, None)
        gc.collect()

    def language(
        self, model_id: str, options: TranscribeOptions, sample: np.ndarray
    ) -> tuple[str, float | None]:
        """The language a job is decoded in and, when it was detected, its
        probability: asked for, else detected on its first chunk; English-only
        models know one."""
        if not self._model(model_id).model.is_multilingual:
            _english_only(model_id, options)
        elif options.language:
            return options.language, None
        found = self.detect(model_id, sample)
        return found.language, found.probability

    def detect(self, model_id: str, sample: np.ndarray, top: int = 5) -> Detection:
        """The language of ``sample`` (its first 30 s), and the ``top`` likeliest."""
        model = self._model(model_id)
        if not model.model.is_multilingual:
            return Detection("en", 1.0, (("en", 1.0),))
        language, probability, ranked = model.detect_language(audio=sample)
        likeliest = tuple((str(lang), round(float(p), 4)) for lang, p in ranked[:top])
        return Detection(str(language), round(float(probability), 4), likeliest)

    def decode(
        self,
        model_id: str,
        options: TranscribeOptions,
        language: str,
        rows: list[list[RawChunk]],
        stop: Callable[[], bool] = lambda: False,
        *,
        fit: bool = False,
    ) -> list[list[list[Segment]]]:
        """One batch: each row is one window, one chunk or several short ones a
        gap of silence apart (``batcher.pack``). Returns, per row and chunk, the
        chunk's segments, timed on its recording. Raises ``Stopped`` when
        ``stop()`` turns true between two stages of the batch. ``fit``: the
        encoder reads the rows' own length, not 30 s (``passes``: live turns)."""
        model = self._model(model_id)
        tokenizer = Tokenizer(
            model.hf_tokenizer, model.model.is_multilingual, task=options.task, language=language
        )
        # Words are aligned where asked, or where a window's chunks share it
        # (each word goes back to its chunk); else spread over the timestamps.
        windows = [Window(_window(row), options.word_timestamps or len(row) > 1) for row in rows]
        with model.stoppable(stop):
            found = decode_windows(model, tokenizer, _options(options, tokenizer), windows, fit=fit)
        return [_chunks(row, w, tokenizer, options) for row, w in zip(rows, found, strict=True)]

    def sequential(
        self, model_id: str, options: TranscribeOptions, audio: np.ndarray, vad: bool
    ) -> tuple[str, float | None, Iterator[Segment]]:
        """faster-whisper's own sequential decode, each window conditioned on the
        text before it: (language, its probability when detected, segments as
        the generator yields them)."""
        model = self._model(model_id)
        if not model.model.is_multilingual:
            _english_only(model_id, options)
        segments, info = model.transcribe(
            audio,
            language=options.language,
            task=options.task,
            initial_prompt=options.prompt,
            hotwords=options.hotwords,
            word_timestamps=options.word_timestamps,
            vad_filter=vad,
            vad_parameters=vad_options(options) if options.vad_tuned else None,
            beam_size=options.beam_size or 5,
            temperature=_FALLBACK if options.temperature is None else options.temperature,
            condition_on_previous_text=True,
        )
        detected = not (options.language and model.model.is_multilingual)
        probability = round(float(info.language_probability), 4) if detected else None
        return info.language, probability, (_sequential_segment(seg, options) for seg in segments)

    def _model(self, model_id: str) -> StoppableModel:
        try:
            return self._models[model_id]
        except KeyError:
            raise ModelLoadFailed(f"model {model_id} is not loaded in the engine") from None


def _english_only(model_id: str, options: TranscribeOptions) -> None:
    """faster-whisper would decode another language as English, silently: a
    job asking for one fails instead, saying why (the job's model was not
    known to be English-only when it was submitted)."""
    if options.language not in (None, "en"):
        name = Path(model_id).name
        raise UnsupportedLanguage(english_only_message(name, str(options.language)))


def _window(row: list[RawChunk]) -> np.ndarray:
    gap = np.zeros(int(PACK_GAP_S * SAMPLE_RATE), np.float32)
    parts = [part for chunk in row for part in (gap, chunk.audio)][1:]
    return np.concatenate(parts)


def _chunks(
    row: list[RawChunk], words: list[dict[str, Any]], tokenizer: Tokenizer, o: TranscribeOptions
) -> list[list[Segment]]:
    """A window's words handed back to the chunk each was spoken in (a shared
    window holds several, a gap of silence apart), timed on its recording,
    and cut into sentence-sized segments."""
    starts, at = [], 0.0
    for chunk in row:
        starts.append(at)
        at += chunk.audio.size / SAMPLE_RATE + PACK_GAP_S
    mine: list[list[tuple[Word, dict[str, Any]]]] = [[] for _ in row]
    for w in words:
        middle = (w["start"] + w["end"]) / 2
        n = max(0, bisect.bisect_right(starts, middle + PACK_GAP_S / 2) - 1)
        chunk, start = row[n], starts[n]
        # Both ends of a word in the span its middle falls in, as faster-whisper.
        span = chunk.span_at(middle - start)
        t0, t1 = (chunk.original_time(w[k] - start, span) for k in ("start", "end"))
        mine[n].append((Word(w["word"], t0, t1, float(w["probability"])), w))
    return [_segments(pairs, tokenizer, o) for pairs in mine]


def _segments(
    pairs: list[tuple[Word, dict[str, Any]]], tokenizer: Tokenizer, o: TranscribeOptions
) -> list[Segment]:
    """One chunk's words as sentence-sized segments (``segmenting``)."""
    timed = [Timed(w.word, w.start, w.end, raw["closes"]) for w, raw in pairs]
    out: list[Segment] = []
    for a, b in sentences(timed):
        words = [w for w, _ in pairs[a:b]]
        raw = pairs[a][1]  # the pass that decoded the segment's first word
        text = "".join(w.word for w in words)
        out.append(
            Segment(
                index=len(out),
                start=words[0].start,
                end=words[-1].end,
                text=text,
                words=words if o.word_timestamps else [],
                tokens=tokenizer.encode(text),
                temperature=o.temperature or 0.0,
                avg_logprob=float(raw["avg_logprob"]),
                compression_ratio=get_compression_ratio(text),
                no_speech_prob=float(raw["no_speech_prob"]),
                seek=0,
            )
        )
    return out


def _options(o: TranscribeOptions, tokenizer: Tokenizer) -> TranscriptionOptions:
    """BatchedInferencePipeline.transcribe's options for one batch, with timestamp
    tokens on: they show where a window's text stopped (``tails``)."""
    return TranscriptionOptions(
        beam_size=o.beam_size or 1,
        best_of=5,
        patience=1,
        length_penalty=1,
        repetition_penalty=1,
        no_repeat_ngram_size=0,
        log_prob_threshold=-1.0,
        no_speech_threshold=0.6,
        compression_ratio_threshold=2.4,
        temperatures=[o.temperature or 0.0],
        initial_prompt=o.prompt,
        prefix=None,
        suppress_blank=True,
        suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
        prepend_punctuations="\"'“¿([{-",
        append_punctuations="\"'.。,，!！?？:：”)]}、",
        max_new_tokens=None,
        hotwords=o.hotwords,
        word_timestamps=True,
        hallucination_silence_threshold=None,
        condition_on_previous_text=False,
        clip_timestamps=[],
        prompt_reset_on_temperature=0.5,
        multilingual=False,
        without_timestamps=False,
        max_initial_timestamp=1.0,
    )


def _sequential_segment(seg: Any, o: TranscribeOptions) -> Segment:
    return Segment(
        index=0,
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
