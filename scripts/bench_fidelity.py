#!/usr/bin/env python3
"""Transcript fidelity: Sona's WER, time and segment lengths against
faster-whisper's sequential defaults and its BatchedInferencePipeline, on long
audio the engine's thresholds were not tuned on.

``scripts/bench.py --only fidelity`` runs the daemon rows (``bench_rows``).
Run alone, this script compares the engine's decoding options in this process
(timestamp tokens, extra passes, the tail threshold), each against the batched
pipeline timed beside it:

    python scripts/bench_fidelity.py [--audio-dir DIR] [--minutes 6] [--json OUT]
                                     [--variant NAME ...] [--no-mix] [--long-minutes M]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from sona.audio import SAMPLE_RATE, decode  # noqa: E402

MIX_SEED = 21  # seeds 1 to 7 were looked at while building the engine; this one was not


@dataclass(frozen=True)
class Audio:
    name: str
    path: Path
    text: str


def speech_mix(out: Path, minutes: float, seed: int) -> Audio:
    """A recording of many espeak-ng voices (scripts/make_speech_mix.py)."""
    subprocess.run(
        [sys.executable, str(HERE / "make_speech_mix.py"), str(out), "--minutes", str(minutes)]
        + ["--seed", str(seed)],
        check=True,
    )
    ref = json.loads(out.with_suffix(".json").read_text())
    return Audio(f"mix {minutes:g} min", out, ref["text"])


def write_wav(out: Path, samples: np.ndarray) -> Path:
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return out


def files(tmp: Path, audio_dir: Path | None, minutes: float) -> list[Audio]:
    """The speech mix; where the shared recordings are here, jfk.flac alone and
    jfk.flac then another mix (a real voice handing over to synthetic ones)."""
    out = [speech_mix(tmp / "mix.wav", minutes, MIX_SEED)]
    if audio_dir is None or not (audio_dir / "refs.json").is_file():
        return out
    jfk_text = json.loads((audio_dir / "refs.json").read_text())["jfk.flac"]["text"]
    out.append(Audio("jfk.flac", audio_dir / "jfk.flac", jfk_text))
    tail = speech_mix(tmp / "tail.wav", 2, MIX_SEED + 1)
    gap = np.zeros(SAMPLE_RATE // 2, np.float32)
    parts = [decode(audio_dir / "jfk.flac", max_seconds=60), gap]
    parts.append(decode(tail.path, max_seconds=600))
    path = write_wav(tmp / "jfk_mix.wav", np.concatenate(parts))
    out.append(Audio("jfk + mix 2 min", path, f"{jfk_text} {tail.text}"))
    return out


def test_clips(tmp: Path, audio_dir: Path | None, minutes: float) -> Audio:
    """Row 1's long file: the test clips (and jfk.flac) repeated, 1 s apart."""
    from bench import build_long, known_clips  # scripts/ is this script's directory

    sentences, jfk = known_clips(audio_dir)
    clips = [*sentences, *([jfk] if jfk else [])]
    long, seconds = build_long(clips, minutes * 60, tmp / "long.wav")
    return Audio(f"test clips {seconds / 60:.1f} min", long.path, long.text)


def timed(run: Callable[[], Any]) -> tuple[Any, float, float]:
    """``run()``, its wall seconds and this process's CPU-seconds (all threads).
    On a machine shared with other work, wall time measures the neighbours as
    much as the code: CPU-seconds are shown beside it."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = run()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def lengths(segments: list[tuple[float, float]]) -> dict[str, float]:
    spans = [end - start for start, end in segments] or [0.0]
    return {"median_s": round(statistics.median(spans), 2), "max_s": round(max(spans), 2)}


# -- the daemon's rows (scripts/bench.py --only fidelity) -------------------------------------


SEEDS_FROM = 31  # the mean rows' mixes: seeds 31 on, none looked at while building the engine


def bench_rows(b: Any, wer: Callable[[str, str], float], log: Callable[[str], None]) -> None:
    """Per file: the daemon at its defaults (beam 5) and at ``beam_size=1``,
    sequential defaults, and the batched pipeline, one after another; WER, time
    ratio and the daemon's segment lengths. Then the mean of the same over
    ``--mix-seeds`` 2-minute mixes: on speech tiny.en reads this badly, one
    file's WER moves by a few hundredths with any change of window or beam,
    and sequential decoding's own (it samples on fallback) by as much."""
    with tempfile.TemporaryDirectory(prefix="sona-fidelity-") as tmp:
        audio = files(Path(tmp), b.args.audio_dir, b.args.mix_minutes)
        audio.append(Audio(f"test clips {b.long_s / 60:.0f} min", b.long.path, b.long.text))
        got = {a.name: _measure(b, a, wer, log) for a in audio}
        for name, m in got.items():
            _rows(b, name, m)
        seeds = range(SEEDS_FROM, SEEDS_FROM + b.args.mix_seeds)
        mixes = [speech_mix(Path(tmp) / f"mix{s}.wav", 2, s) for s in seeds]
        means = [_measure(b, a, wer, log) for a in mixes]
        if means:
            name = f"mixes {len(means)}x2 min (seeds {seeds[0]}-{seeds[-1]}), mean"
            got[name] = {k: _mean([m[k] for m in means]) for k in ("seconds", "cpu_seconds", "wer")}
            _rows(b, name, got[name])
        b.raw["fidelity"] = got


def _measure(
    b: Any, a: Audio, wer: Callable[[str, str], float], log: Callable[[str], None]
) -> dict[str, Any]:
    log(f"F  {a.name}: daemon (its default beam, beam 1), sequential defaults, batched pipeline")
    seconds, cpu, texts = {}, {}, {}
    for side, form in (("sona", {}), ("sona beam 1", {"beam_size": "1"})):
        before = daemon_cpu(b)
        seconds[side], job = b.daemon.transcribe(a.path, **form)
        cpu[side] = daemon_cpu(b) - before
        assert job["status"] == "completed", job
        texts[side] = job["text"]
        if not form:
            url = f"/v1/jobs/{job['id']}/transcript"
            segs = b.daemon.http.get(url, params={"format": "verbose_json"}).json()["segments"]
    (_, texts["sequential"]), seconds["sequential"], cpu["sequential"] = timed(
        lambda: b.local.sequential(a.path)
    )
    (_, texts["batched"]), seconds["batched"], cpu["batched"] = timed(
        lambda: b.local.batched(a.path)
    )
    seg = lengths([(s["start"], s["end"]) for s in segs])
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "wer": {side: wer(a.text, text) for side, text in texts.items()},
        "segments": {**seg, "count": len(segs)},
    }


def _mean(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.mean(r[k] for r in runs) for k in runs[0]}


def _rows(b: Any, name: str, m: dict[str, Any]) -> None:
    w, s, c = m["wer"], m["seconds"], m["cpu_seconds"]
    for side in ("sona", "sona beam 1"):
        b.row(
            f"F  {name}: WER {side} / sequential / batched",
            f"{w[side]:.3f} / {w['sequential']:.3f} / {w['batched']:.3f}",
            "sona <= sequential + 0.01",
            w[side] <= w["sequential"] + 0.01,
        )
        b.row(
            f"F  {name}: time {side} / batched (CPU-s)",
            f"{s[side]:.1f} s / {s['batched']:.1f} s: {s[side] / s['batched']:.2f}x "
            f"(CPU {c[side] / c['batched']:.2f}x)",
            "<= 1.10x",
            s[side] <= 1.10 * s["batched"],
        )
    if "segments" in m:
        seg = m["segments"]
        b.row(
            f"F  {name}: segments median / max",
            f"{seg['median_s']:.1f} s / {seg['max_s']:.1f} s ({seg['count']} segments)",
            "<= 8 s / <= 15 s",
            seg["median_s"] <= 8 and seg["max_s"] <= 15,
        )


def daemon_cpu(b: Any) -> float:
    """CPU-seconds of the daemon and its engine process so far."""
    from bench import cpu_seconds  # scripts/ is this script's directory

    return cpu_seconds(b.daemon.proc.pid) + cpu_seconds(b.daemon.engine_pid())


# -- the engine's options, in this process ------------------------------------------------------


class Engine:
    """Sona's engine path in this process: VAD chunks of 20 s, decoded in
    batches as the engine does, with options patched per run."""

    def __init__(self, batch: int) -> None:
        from sona.engine.registry import bundled_model_path
        from sona.engine.whisper import WhisperBackend

        self.batch = batch
        self.backend = WhisperBackend(device="cpu", compute_type="auto", cpu_threads=0)
        self.backend.load("tiny.en", bundled_model_path())

    def run(self, path: Path, words: bool, chunk_s: float) -> tuple[str, list[tuple[float, float]]]:
        from sona.engine.chunker import Chunker
        from sona.engine.whisper import speech_detector
        from sona.jobs import TranscribeOptions

        chunker = Chunker(speech_detector(chunk_s), max_s=chunk_s)
        chunks = chunker.feed(decode(path, max_seconds=7200)) + chunker.finish()
        segments, options = [], TranscribeOptions(word_timestamps=words)
        for n in range(0, len(chunks), self.batch):
            rows = [[c] for c in chunks[n : n + self.batch]]
            for [segs] in self.backend.decode("tiny.en", options, "en", rows):
                segments += segs
        text = " ".join(s.text.strip() for s in segments)
        return text, [(s.start, s.end) for s in segments]


@contextmanager
def patched(**values: Any) -> Iterator[None]:
    """Set engine constants for one run: extra_passes, tail_s, timestamps,
    condition, pack (others are ignored here)."""
    import sona.engine.passes as passes
    import sona.engine.tails as tails
    import sona.engine.whisper as whisper

    saved = (passes.EXTRA_PASSES, passes.CONDITION_TAILS, tails.TAIL_S, whisper._options)
    pack = passes.PACK_TAILS
    passes.PACK_TAILS = values.get("pack", pack)
    options = whisper._options
    passes.EXTRA_PASSES = values.get("extra_passes", passes.EXTRA_PASSES)
    passes.CONDITION_TAILS = values.get("condition", passes.CONDITION_TAILS)
    tails.TAIL_S = values.get("tail_s", tails.TAIL_S)
    if values.get("timestamps") is False:
        whisper._options = lambda o, t: replace(options(o, t), without_timestamps=True)
    try:
        yield
    finally:
        passes.EXTRA_PASSES, passes.CONDITION_TAILS, tails.TAIL_S, whisper._options = saved
        passes.PACK_TAILS = pack


VARIANTS: dict[str, dict[str, Any]] = {
    "timestamps off": {"timestamps": False},
    "timestamps on, no extra pass": {"extra_passes": 0},
    "timestamps on, 1 extra pass": {"extra_passes": 1},
    "default: 2 extra passes, tail 2 s": {},
    "extra passes prompted with the window's text": {"condition": True},
    "2 extra passes, tail 1 s": {"tail_s": 1.0},
    "2 extra passes, tail 4 s": {"tail_s": 4.0},
    "default, words aligned (word_timestamps)": {"word_timestamps": True},
    "default, 30 s chunks": {"chunk_s": 30.0},
    "timestamps off, 30 s chunks": {"timestamps": False, "chunk_s": 30.0},
    "30 s chunks, prompted": {"chunk_s": 30.0, "condition": True},
    "30 s chunks, 4 extra passes": {"chunk_s": 30.0, "extra_passes": 4},
    "25 s chunks": {"chunk_s": 25.0},
    "30 s chunks, tails packed": {"chunk_s": 30.0, "pack": True},
    "tails packed": {"pack": True},
}


def compare(audio: list[Audio], batch: int, only: list[str]) -> dict[str, Any]:
    """Each variant on each file, the batched pipeline timed beside each run."""
    from bench import InProcess, wer  # scripts/ is this script's directory

    engine, local = Engine(batch), InProcess("cpu")
    out: dict[str, Any] = {}
    for a in audio:
        out[a.name] = {}
        for name, values in VARIANTS.items():
            if only and name not in only:
                continue
            with patched(**values):
                words, chunk_s = bool(values.get("word_timestamps")), values.get("chunk_s", 20.0)
                (text, spans), took, cpu = timed(
                    lambda a=a, w=words, c=chunk_s: engine.run(a.path, w, c)
                )
            (_, p_text), p_s, p_cpu = timed(lambda a=a: local.batched(a.path))
            out[a.name][name] = {
                "wer": round(wer(a.text, text), 3),
                "cpu_ratio": round(cpu / p_cpu, 2),
                "wall_ratio": round(took / p_s, 2),
                "batched_wer": round(wer(a.text, p_text), 3),
                **lengths(spans),
            }
            print(a.name, "|", name, "|", out[a.name][name], flush=True)
        _, s_text = local.sequential(a.path)
        out[a.name]["sequential defaults"] = {"wer": round(wer(a.text, s_text), 3)}
        print(a.name, "| sequential |", out[a.name]["sequential defaults"], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--audio-dir", type=Path, default=REPO.parent / "shared" / "audio")
    ap.add_argument("--minutes", type=float, default=6.0, help="length of the speech mix")
    ap.add_argument("--batch", type=int, default=8, help="chunks per engine batch")
    ap.add_argument("--json", type=Path, metavar="OUT")
    ap.add_argument("--variant", action="append", default=[], choices=list(VARIANTS))
    ap.add_argument("--no-mix", action="store_true", help="only the shared recordings")
    ap.add_argument(
        "--long-minutes", type=float, default=0.0, help="also row 1's test-clip file, this long"
    )
    args = ap.parse_args()
    audio_dir = args.audio_dir if args.audio_dir.is_dir() else None
    with tempfile.TemporaryDirectory(prefix="sona-fidelity-") as tmp:
        audio = files(Path(tmp), audio_dir, args.minutes)[1 if args.no_mix else 0 :]
        if args.long_minutes:
            audio.append(test_clips(Path(tmp), audio_dir, args.long_minutes))
        results = compare(audio, args.batch, args.variant)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
