#!/usr/bin/env python3
"""Store write cost over a long job: the time of one chunk's write (its
segments, the running text, progress) at the start and at the end of a
3-hour recording, on SQLite (and PostgreSQL with --pg).

    python scripts/bench_store.py [--hours 3] [--pg URL] [--json OUT]

A chunk is 20 s of speech in 5 segments of 12 words each, as the engine
writes them; no model is loaded. ``scripts/bench.py`` adds these rows to its
table."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sona.jobs import NewJob, Segment, Status, TranscribeOptions, Word  # noqa: E402
from sona.store import Claim, JobStore, open_store  # noqa: E402

CHUNK_S = 20.0
SEGMENTS_PER_CHUNK = 5
WORDS_PER_SEGMENT = 12
EDGE = 20  # writes averaged at each end


def chunk_segments(chunk: int) -> list[Segment]:
    out = []
    seg_s = CHUNK_S / SEGMENTS_PER_CHUNK
    for n in range(SEGMENTS_PER_CHUNK):
        start = chunk * CHUNK_S + n * seg_s
        step = seg_s / WORDS_PER_SEGMENT
        words = [
            Word(f" word{i}", start + i * step, start + (i + 1) * step, 0.9)
            for i in range(WORDS_PER_SEGMENT)
        ]
        out.append(
            Segment(
                index=chunk * SEGMENTS_PER_CHUNK + n,
                start=start,
                end=start + seg_s,
                text="".join(w.word for w in words) + ".",
                words=words,
            )
        )
    return out


async def chunk_writes(store: JobStore, chunks: int) -> tuple[list[float], Claim]:
    """One job's ``chunks`` chunk writes, as the worker makes them: seconds
    each, and the job's claim (still processing)."""
    job_id = f"bench-{uuid.uuid4().hex[:8]}"
    await store.create(
        NewJob(
            id=job_id,
            options=TranscribeOptions(),
            model="tiny.en",
            priority=0,
            file_path="/dev/null",
            file_name="long.wav",
            file_sha256=uuid.uuid4().hex,
            file_size=1,
            duration=chunks * CHUNK_S,
            max_attempts=1,
        )
    )
    claim = await store.claim(worker_id="bench", prefer_models=[], lease_s=3600)
    assert claim is not None and claim.job.id == job_id
    times = []
    for chunk in range(chunks):
        segments = chunk_segments(chunk)
        t0 = time.perf_counter()
        await store.add_chunks(
            claim,
            first=chunk,
            count=1,
            segments=segments,
            processed_seconds=(chunk + 1) * CHUNK_S,
        )
        times.append(time.perf_counter() - t0)
    return times, claim


async def measure(store: JobStore, hours: float) -> dict[str, Any]:
    chunks = int(hours * 3600 / CHUNK_S)
    times, claim = await chunk_writes(store, chunks)
    t0 = time.perf_counter()
    await store.finish(claim, Status.COMPLETED)
    finish_s = time.perf_counter() - t0
    first = statistics.mean(times[:EDGE]) * 1000
    last = statistics.mean(times[-EDGE:]) * 1000
    return {
        "chunks": chunks,
        "segments": chunks * SEGMENTS_PER_CHUNK,
        "first_ms": round(first, 2),
        "last_ms": round(last, 2),
        "ratio": round(last / first, 2),
        "all_writes_s": round(sum(times), 2),
        "finish_ms": round(finish_s * 1000, 1),
    }


async def run_async(hours: float, pg: str | None) -> dict[str, dict[str, Any]]:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        targets = [("sqlite", f"sqlite:{Path(tmp) / 'bench.sqlite'}")]
        if pg:
            targets.append(("postgresql", pg))
        for name, url in targets:
            store = await open_store(url)
            try:
                results[name] = await measure(store, hours)
            finally:
                await store.close()
    return results


def run(hours: float = 3.0, pg: str | None = None) -> dict[str, dict[str, Any]]:
    return asyncio.run(run_async(hours, pg))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hours", type=float, default=3.0)
    ap.add_argument("--pg", help="also a PostgreSQL store at this URL (its tables are kept)")
    ap.add_argument("--json", type=Path, metavar="OUT")
    args = ap.parse_args()
    results = run(args.hours, args.pg)
    for name, r in results.items():
        print(
            f"{name}: {r['chunks']} chunk writes ({r['segments']} segments): "
            f"first {EDGE} {r['first_ms']} ms, last {EDGE} {r['last_ms']} ms "
            f"({r['ratio']}x), all {r['all_writes_s']} s, finish {r['finish_ms']} ms"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
