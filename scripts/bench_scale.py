#!/usr/bin/env python3
"""Scale-out throughput: one API node (`sona serve --no-worker`) and N `sona
worker` processes on a PostgreSQL store, all on this machine, over the same
batch of short jobs; jobs per second and audio seconds per second for each N.

    python scripts/bench_scale.py [--workers 1,2] [--jobs 100] [--pg URL] [--json OUT]

Each N gets a fresh schema and fresh processes; the clock runs from the first
upload to the last job finished, with every worker's model already loaded.
``scripts/bench.py --scale-out`` adds these rows to the main table."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
import wave
from pathlib import Path
from typing import Any

import asyncpg
import httpx

REPO = Path(__file__).resolve().parent.parent
SENTENCES = ("fox.wav", "report.wav", "weather.wav", "numbers.wav", "meeting.wav")
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"


def _spawn(args: list[str], log: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sona", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=REPO,
            env={**os.environ, "SONA_DEVICE": os.environ.get("SONA_DEVICE", "cpu")},
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"{args[0]} did not start; its log: {log}")
    return proc, json.loads(line)


async def _schema(pg: str, sql: str) -> None:
    conn = await asyncpg.connect(pg)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _seconds(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


async def _run_jobs(url: str, files: list[tuple[str, bytes]]) -> tuple[float, dict[str, int]]:
    """Upload all, wait for all: (seconds, status counts)."""
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        gate = asyncio.Semaphore(4)  # the per-client upload limit

        async def one(file: tuple[str, bytes]) -> str:
            async with gate:
                r = await client.post("/v1/jobs", files={"file": file})
                r.raise_for_status()
                return str(r.json()["id"])

        ids = set(await asyncio.gather(*(one(p) for p in files)))
        while True:
            page = (await client.get("/v1/jobs", params={"limit": len(ids) + 5})).json()
            jobs = [j for j in page["data"] if j["id"] in ids]
            if len(jobs) == len(ids) and all(
                j["status"] in ("completed", "failed", "cancelled") for j in jobs
            ):
                break
            await asyncio.sleep(0.2)
    elapsed = time.perf_counter() - started
    counts: dict[str, int] = {}
    for j in jobs:
        counts[j["status"]] = counts.get(j["status"], 0) + 1
    return elapsed, counts


def measure(workers: int, jobs: int, pg: str, tmp: Path) -> dict[str, Any]:
    """One cluster of ``workers`` workers; its figures."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    asyncio.run(_schema(pg, f'CREATE SCHEMA "{schema}"'))
    store = f"{pg}?search_path={schema}"
    shared = tmp / schema
    procs: list[subprocess.Popen[str]] = []
    try:
        api, ready = _spawn(
            ["serve", "--no-worker", "--port", "0", "--store", store, "--data-dir", str(shared)],
            tmp / f"{schema}-api.log",
        )
        procs.append(api)
        for n in range(workers):
            worker, _ = _spawn(
                ["worker", "--store", store, "--data-dir", str(shared), "--model", "tiny.en"],
                tmp / f"{schema}-worker{n}.log",
            )
            procs.append(worker)
        audio = REPO / "tests" / "audio"
        files = [audio / SENTENCES[i % len(SENTENCES)] for i in range(jobs)]
        bodies = [(p.name, p.read_bytes()) for p in files]
        seconds, counts = asyncio.run(_run_jobs(f"http://127.0.0.1:{ready['port']}", bodies))
        audio_s = sum(_seconds(p) for p in files)
        return {
            "workers": workers,
            "jobs": jobs,
            "seconds": round(seconds, 2),
            "jobs_per_s": round(jobs / seconds, 2),
            "audio_s_per_s": round(audio_s / seconds, 1),
            "statuses": counts,
        }
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
            if proc.stdout:
                proc.stdout.close()
        asyncio.run(_schema(pg, f'DROP SCHEMA "{schema}" CASCADE'))


def run(worker_counts: list[int], jobs: int, pg: str) -> list[dict[str, Any]]:
    """One unmeasured warm-up cluster first: the first cluster of a run was
    markedly slower than the same cluster later (page cache, the database's
    first schema), whichever worker count came first."""
    with tempfile.TemporaryDirectory(prefix="sona-scale-") as tmp:
        measure(worker_counts[0], min(jobs, 20), pg, Path(tmp))
        return [measure(n, jobs, pg, Path(tmp)) for n in worker_counts]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", default="1,2", help="worker counts to compare (default 1,2)")
    ap.add_argument("--jobs", type=int, default=100, help="short jobs per run (default 100)")
    ap.add_argument("--pg", default=PG_DEFAULT, help=f"PostgreSQL URL (default {PG_DEFAULT})")
    ap.add_argument("--json", type=Path, metavar="OUT", help="write the figures here")
    args = ap.parse_args()
    results = run([int(n) for n in args.workers.split(",")], args.jobs, args.pg)
    print(f"cpus: {os.cpu_count()}")
    for r in results:
        print(
            f"{r['workers']} worker(s): {r['jobs']} jobs in {r['seconds']} s = "
            f"{r['jobs_per_s']} jobs/s, {r['audio_s_per_s']} audio s/s, {r['statuses']}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(r["statuses"] == {"completed": r["jobs"]} for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
