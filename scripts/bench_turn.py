#!/usr/bin/env python3
"""Where one live turn's decode goes, stage by stage, in this process.

    python scripts/bench_turn.py [--clip numbers.wav] [--runs 5] [--threads 1,2]

The engine process's part of a live turn (docs/performance.md, "Live
sessions"): the 24 kHz PCM16 the client sends is resampled as the daemon
does, then decoded as ``engine/live_turns.py`` does (Silero VAD, log-mel
features, encoder, decoder), with the encoder's window fitted to the turn
(as live turns are) and over the full 30 s (as before), for each
``cpu_threads``. Median of ``--runs`` after a warm-up; the rest of a turn's
path (socket, pipe, store) is what ``bench_live.py``'s L1 adds to these."""

from __future__ import annotations

import argparse
import pickle
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_live import AUDIO, pcm24k

from sona.engine.chunker import Chunker
from sona.engine.live_turns import transcribe_turns
from sona.engine.messages import Transcribe
from sona.engine.registry import bundled_model_path
from sona.engine.whisper import WhisperBackend, speech_detector
from sona.jobs import TranscribeOptions
from sona.live_audio import Resampler, pcm16

CHUNK_S = 20.0  # Settings' chunk_s default


class Stages:
    """Seconds per stage, gathered by wrapping the model's calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = defaultdict(list)

    def timed(self, name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                self.seconds[name].append(time.perf_counter() - t0)

        return wrapper


class _Timed:
    """An object whose ``method`` is timed, the rest passed through."""

    def __init__(self, inner: Any, method: str, stages: Stages, name: str) -> None:
        self._inner = inner
        setattr(self, method, stages.timed(name, getattr(inner, method)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner(*args, **kwargs)


def profile(audio: Any, threads: int, fit: bool, runs: int) -> dict[str, float]:
    backend = WhisperBackend(device="cpu", compute_type="auto", cpu_threads=threads)
    backend.load("tiny.en", bundled_model_path())  # type: ignore[arg-type]
    model = backend._model("tiny.en")
    stages = Stages()
    model.encode = stages.timed("encoder", model.encode)  # type: ignore[method-assign]
    model.model = _Timed(model.model, "generate", stages, "decoder")
    model.feature_extractor = stages.timed("log-mel", model.feature_extractor)  # type: ignore[method-assign]
    decode = backend.decode
    backend.decode = lambda *a, **k: decode(*a, **{**k, "fit": fit})  # type: ignore[method-assign]
    options = TranscribeOptions()
    detect = speech_detector(CHUNK_S, options)
    turn = Transcribe(0, "tiny.en", options, audio)

    def chunker() -> Chunker:
        return Chunker(stages.timed("silero vad", detect), max_s=CHUNK_S)

    for n in range(runs + 1):
        if n == 1:
            stages.seconds.clear()  # the first run warms up
        t0 = time.perf_counter()
        [(_, segments)] = transcribe_turns(backend, chunker, [turn])
        stages.seconds["turn, all"].append(time.perf_counter() - t0)
    print(f"  text: {' '.join(s.text.strip() for s in segments)!r}")
    return {k: statistics.median(v) for k, v in stages.seconds.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", default="numbers.wav")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", default="1,2")
    args = ap.parse_args()
    pcm = pcm24k(Path(AUDIO / args.clip))
    t0 = time.perf_counter()
    audio = Resampler(24_000)(pcm16(pcm))
    resample = time.perf_counter() - t0
    t0 = time.perf_counter()
    pickled = pickle.dumps(Transcribe(0, "tiny.en", TranscribeOptions(), audio))
    pickle.loads(pickled)
    pipe = time.perf_counter() - t0
    print(f"{args.clip}: {audio.size / 16_000:.2f} s of speech")
    print(f"  resample 24 -> 16 kHz (at once)   {resample * 1000:7.1f} ms")
    print(f"  pickle the turn ({len(pickled) // 1024} KiB) and back {pipe * 1000:7.1f} ms")
    for threads in (int(t) for t in args.threads.split(",")):
        for fit in (True, False):
            window = "fitted" if fit else "30 s"
            print(f"cpu_threads={threads}, {window} window (median of {args.runs}):")
            for stage, s in profile(audio, threads, fit, args.runs).items():
                print(f"  {stage:12s} {s * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
