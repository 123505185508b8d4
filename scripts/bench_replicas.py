"""One multi-thread CTranslate2 replica against several one-thread replicas:
the measurement behind ``parallel_steps`` (docs/performance.md).

Cuts a part of the bench's long file into the daemon's chunks (Silero VAD,
at most 20 s of speech), then encodes and decodes those windows in this
process, greedy, in batches of each size: once from one thread with faster-whisper's
default threads and one replica, once split between ``--replicas`` threads
with ``num_workers=--replicas`` one-thread replicas. Prints the seconds of each.

    .venv/bin/python scripts/bench_replicas.py [--seconds 300] [--replicas 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the long file and the repo's import path)
from faster_whisper import WhisperModel  # noqa: E402
from faster_whisper.audio import pad_or_trim  # noqa: E402
from faster_whisper.tokenizer import Tokenizer  # noqa: E402

from sona.audio import decode  # noqa: E402
from sona.engine.batcher import pack  # noqa: E402
from sona.engine.chunker import Chunker  # noqa: E402
from sona.engine.registry import bundled_model_path  # noqa: E402
from sona.engine.whisper import _window, speech_detector  # noqa: E402


def windows(seconds: float, audio_dir: Path | None) -> list[np.ndarray]:
    sentences, jfk = bench.known_clips(audio_dir)
    out = Path(tempfile.mkdtemp()) / "long.wav"
    bench.build_long(sentences + ([jfk] if jfk else []), seconds, out)
    chunker = Chunker(speech_detector(20), max_s=20)
    chunks = chunker.feed(decode(out, max_seconds=seconds * 2)) + chunker.finish()
    rows = pack([("job", c.audio.size / 16000) for c in chunks], 20)
    return [_window([chunks[i] for i in row]) for row in rows]


def timed(model: WhisperModel, features: list[np.ndarray], batch: int, callers: int) -> float:
    tokenizer = Tokenizer(model.hf_tokenizer, False, task="transcribe", language="en")
    prompt = model.get_prompt(tokenizer, [], without_timestamps=True)

    def work(mine: list[np.ndarray]) -> None:
        for at in range(0, len(mine), batch):
            part = mine[at : at + batch]
            encoded = model.encode(np.stack(part))
            model.model.generate(encoded, [list(prompt)] * len(part), beam_size=1)

    threads = [threading.Thread(target=work, args=(features[k::callers],)) for k in range(callers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--audio-dir", type=Path, default=bench.REPO.parent / "shared" / "audio")
    args = parser.parse_args()
    audio_dir = args.audio_dir if args.audio_dir.is_dir() else None
    wins = windows(args.seconds, audio_dir)
    path = str(bundled_model_path())
    setups = [
        ("1 replica, default threads, 1 caller", 0, 1, 1),
        (
            f"{args.replicas} replicas x 1 thread, {args.replicas} callers",
            1,
            args.replicas,
            args.replicas,
        ),
    ]
    for name, threads, replicas, callers in setups:
        model = WhisperModel(
            path,
            device="cpu",
            compute_type="int8",
            cpu_threads=threads,
            num_workers=replicas,
            local_files_only=True,
        )
        features = [pad_or_trim(model.feature_extractor(w)[..., :-1]) for w in wins]
        timed(model, features[:2], 2, 1)  # warm-up, untimed
        for batch in (1, 2, 4, 8):
            seconds = timed(model, features, batch, callers)
            print(f"{name:40s} batch {batch}: {seconds:5.2f} s for {len(wins)} windows", flush=True)


if __name__ == "__main__":
    main()
