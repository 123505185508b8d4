#!/usr/bin/env python3
"""Search at scale (issue 20.5): 10,000 jobs' worth of segments (1M: 100
segments of 12 words each per job) written straight into a SQLite store, no
decoding; then ``store.search`` latency for two-word queries, and the write
cost of a chunk with the full-text index against without it.

    python scripts/bench_search.py [--jobs 10000] [--queries 300] [--json OUT]

Words are drawn from a 20,000-word vocabulary with Zipf frequencies (s = 1),
as speech has them. The two-word queries pair words of ranks 10..2,000 (what
people search for: not "the", not a word said once); a pair of the two most
common words (a match in most segments, the worst case) is timed apart. The
write cost is ``scripts/bench_store.py``'s chunk write (5 segments of 12
words, progress, in one transaction) into the 1M-segment database, first with
the index's triggers, then with them dropped, alternating."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "service"))
sys.path.insert(0, str(REPO))

from scripts.bench_store import SEGMENTS_PER_CHUNK, chunk_writes  # noqa: E402
from sona.errors import QueryTooBroad  # noqa: E402
from sona.jobs import Status  # noqa: E402
from sona.store.sqlite import SqliteStore  # noqa: E402
from sona.textsearch import SearchFilters, parse  # noqa: E402

VOCAB = 20_000
SEGMENTS_PER_JOB = 100
WORDS = 12
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "de", "pa", "gu", "re"]


def vocabulary() -> list[str]:
    """20,000 distinct pronounceable words (two to four syllables)."""
    words = ("".join(p) for n in (2, 3, 4) for p in itertools.product(SYLLABLES, repeat=n))
    return list(itertools.islice(words, VOCAB))


def fill(path: str, jobs: int, vocab: list[str], rng: random.Random) -> float:
    """Write ``jobs`` completed jobs of ``SEGMENTS_PER_JOB`` segments each, in
    one transaction per 100 jobs, the triggers indexing as they go. Seconds."""
    weights = list(itertools.accumulate(1.0 / r for r in range(1, VOCAB + 1)))
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")  # a bulk load, not what the store does
    t0 = time.perf_counter()
    now = time.time()
    for batch in range(0, jobs, 100):
        db.execute("BEGIN")
        for j in range(batch, min(batch + 100, jobs)):
            job_id = f"job{j:06d}"
            db.execute(
                """INSERT INTO jobs (id, status, options, file_path, file_name, file_sha256,
                   file_size, max_attempts, created_at, finished_at, language)
                   VALUES (?, 'completed', '{}', '/x', ?, 'x', 1, 1, ?, ?, 'en')""",
                (job_id, f"{job_id}.wav", now - jobs + j, now - jobs + j + 1),
            )
            drawn = rng.choices(vocab, cum_weights=weights, k=SEGMENTS_PER_JOB * WORDS)
            db.executemany(
                """INSERT INTO segments (job_id, idx, start, "end", text, data)
                   VALUES (?, ?, ?, ?, ?, '{}')""",
                [
                    (
                        job_id,
                        i,
                        i * 4.0,
                        i * 4.0 + 4.0,
                        " " + " ".join(drawn[i * WORDS : (i + 1) * WORDS]) + ".",
                    )
                    for i in range(SEGMENTS_PER_JOB)
                ],
            )
        db.execute("COMMIT")
    db.close()
    return time.perf_counter() - t0


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def latency(store: SqliteStore, queries: list[str]) -> dict[str, Any]:
    """Each query's time to its first page, or to its ``QueryTooBroad``."""
    times, hits, too_broad = [], [], 0
    for q in queries:
        t0 = time.perf_counter()
        try:
            page, _ = await store.search(parse(q), SearchFilters(), limit=20, after=None)
            hits.append(len(page))
        except QueryTooBroad:
            too_broad += 1
        times.append((time.perf_counter() - t0) * 1000)
    return {
        "too_broad": too_broad,
        "queries": len(queries),
        "p50_ms": round(pct(times, 50), 2),
        "p99_ms": round(pct(times, 99), 2),
        "max_ms": round(max(times), 2),
        "mean_hits": round(statistics.mean(hits), 1) if hits else None,
    }


async def write_cost(path: str, rounds: int, chunks: int) -> dict[str, Any]:
    """Chunk writes with the index's triggers and without, alternating round by
    round; the median write of each kind (other work on a shared machine lands
    on a few writes) and the mean."""
    out: dict[str, list[float]] = {"with_index": [], "without_index": []}
    triggers = {
        r[0]: r[1]
        for r in sqlite3.connect(path).execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
        )
    }
    for _ in range(rounds):
        for mode in ("with_index", "without_index"):
            db = sqlite3.connect(path, isolation_level=None)
            for name, sql in triggers.items():
                db.execute(f"DROP TRIGGER IF EXISTS {name}")
                if mode == "with_index":
                    db.execute(sql)
            db.close()
            store = await SqliteStore.open(path)
            try:
                times, claim = await chunk_writes(store, chunks)
                await store.finish(claim, Status.COMPLETED)
                out[mode] += times
            finally:
                await store.close()
    med = {k: statistics.median(v) * 1000 for k, v in out.items()}
    mean = {k: statistics.mean(v) * 1000 for k, v in out.items()}
    return {
        "writes_each": rounds * chunks,
        "segments_per_chunk": SEGMENTS_PER_CHUNK,
        "with_index_median_ms": round(med["with_index"], 3),
        "without_index_median_ms": round(med["without_index"], 3),
        "overhead_median_pct": round(100 * (med["with_index"] / med["without_index"] - 1), 1),
        "with_index_mean_ms": round(mean["with_index"], 3),
        "without_index_mean_ms": round(mean["without_index"], 3),
        "overhead_mean_pct": round(100 * (mean["with_index"] / mean["without_index"] - 1), 1),
    }


async def run_async(jobs: int, n_queries: int, rounds: int, chunks: int) -> dict[str, Any]:
    rng = random.Random(20)
    vocab = vocabulary()
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "search.sqlite")
        await (await SqliteStore.open(path)).close()  # the schema, index included
        fill_s = fill(path, jobs, vocab, rng)
        store = await SqliteStore.open(path)
        try:
            pairs = [f"{vocab[rng.randrange(10, 2000)]} {vocab[rng.randrange(10, 2000)]}"
                     for _ in range(n_queries)]  # fmt: skip
            await latency(store, pairs[:20])  # warm the page cache
            typical = await latency(store, pairs)
            common = await latency(store, [f"{vocab[0]} {vocab[1]}"] * 5)
            phrase = await latency(store, [f'"{p}"' for p in pairs[:50]])
            prefix = await latency(store, [p[:5] + "*" for p in pairs[:50]])
        finally:
            await store.close()
        size_mb = (await asyncio.to_thread(Path(path).stat)).st_size / 1e6
        writes = await write_cost(path, rounds, chunks)
    return {
        "jobs": jobs,
        "segments": jobs * SEGMENTS_PER_JOB,
        "fill_s": round(fill_s, 1),
        "db_mb": round(size_mb, 1),
        "two_words": typical,
        "two_most_common_words": common,
        "phrases": phrase,
        "prefixes": prefix,
        "writes": writes,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=10, help="write-cost rounds of each kind")
    ap.add_argument("--chunks", type=int, default=30, help="chunk writes per round")
    ap.add_argument("--json", type=Path, metavar="OUT")
    args = ap.parse_args()
    result = asyncio.run(run_async(args.jobs, args.queries, args.rounds, args.chunks))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
