#!/usr/bin/env python3
"""Sona's performance claims, each measured side by side in one run.

Every verdict is a ratio (or a difference) between two things measured in the
same run on the same machine: the daemon against faster-whisper called in this
process, or the daemon against itself in another state. Absolute figures vary
with the hardware; the ratios are what the goals are about. docs/performance.md
explains each row.

    python scripts/bench.py [--device cpu|cuda] [--audio-dir DIR] [--soak 500]
                            [--quick] [--json OUT] [--scale-out [PG_URL]]
                            [--only PHASE,...] [--mix-minutes 6] [--mix-seeds 8]

Nothing else runs here while a side is timed: the in-process model idles while
the daemon works, and the daemon idles while the in-process model works.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jiwer
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sona.audio import SAMPLE_RATE, decode  # noqa: E402
from sona.engine.registry import bundled_model_path  # noqa: E402

TEST_AUDIO = REPO / "tests" / "audio"
SENTENCES = ("fox.wav", "report.wav", "weather.wav", "numbers.wav", "meeting.wav")
FINISHED = {"completed", "failed", "cancelled"}
CPU_WINDOW_S = 3.0  # engine CPU is read over this long after a cancel
CPU_IDLE_TOLERANCE_S = 0.1  # "about zero": under 0.1 CPU-second in the window
WAVE = 20  # soak jobs submitted at once
UPLOADS_PER_CLIENT = 4  # the daemon's default max_uploads_per_client
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sizes:
    long_s: float  # the long file is at least this long
    clips: int  # short clips submitted at once
    soak: int  # short jobs for the memory row
    hammer_s: float  # how long 50 clients poll a job
    # The job that keeps the daemon busy for rows 3, 4 and 7, then cancelled: long
    # enough to be still processing when they are done (15 minutes may not be).
    busy_s: float


FULL = Sizes(long_s=15 * 60, clips=20, soak=500, hammer_s=5.0, busy_s=60 * 60)
QUICK = Sizes(long_s=120, clips=5, soak=60, hammer_s=2.0, busy_s=30 * 60)


@dataclass(frozen=True)
class Clip:
    path: Path
    text: str  # what is said in it


# -- audio and text ---------------------------------------------------------------


def known_clips(audio_dir: Path | None) -> tuple[list[Clip], Clip | None]:
    """The repo's five mono sentences, and jfk.flac when the shared audio is here."""
    manifest = json.loads((TEST_AUDIO / "manifest.json").read_text())
    sentences = [Clip(TEST_AUDIO / name, manifest[name]["text"]) for name in SENTENCES]
    if audio_dir is None:
        return sentences, None
    refs = json.loads((audio_dir / "refs.json").read_text())
    return sentences, Clip(audio_dir / "jfk.flac", refs["jfk.flac"]["text"])


def build_long(clips: list[Clip], seconds: float, out: Path) -> tuple[Clip, float]:
    """The clips with 1 s of silence after each, repeated whole until at least
    ``seconds`` long; the reference text is theirs, in the same order. Written
    one cycle at a time, so an hour of audio never sits in memory."""
    gap = np.zeros(SAMPLE_RATE, dtype=np.float32)
    cycle = np.concatenate([x for c in clips for x in (decode(c.path, max_seconds=600), gap)])
    frames = (np.clip(cycle, -1, 1) * 32767).astype("<i2").tobytes()
    repeats = int(np.ceil(seconds * SAMPLE_RATE / cycle.size))
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        for _ in range(repeats):
            w.writeframes(frames)
    text = " ".join(c.text for c in clips)
    return Clip(out, " ".join([text] * repeats)), repeats * cycle.size / SAMPLE_RATE


def normalise(text: str) -> str:
    """Lowercase, punctuation gone (apostrophes joined, the rest a space), one space."""
    text = text.lower().replace("'", "").replace("\u2019", "")
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(normalise(reference), normalise(hypothesis)))


# -- processes ----------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_over(pid: int, seconds: float) -> float:
    """CPU-seconds ``pid`` uses over the next ``seconds``."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return cpu_seconds(pid) - before


# -- the daemon -------------------------------------------------------------------------


class Daemon:
    """``python -m sona serve`` as a subprocess, and a client for it."""

    def __init__(self, tmp: Path, device: str) -> None:
        env = {**os.environ, "SONA_DEVICE": device}
        self.log_path = tmp / "daemon.log"
        self._log = self.log_path.open("w")
        cmd = [sys.executable, "-m", "sona", "serve", "--port", "0", "--model", "tiny.en"]
        self.proc = subprocess.Popen(
            [*cmd, "--data-dir", str(tmp / "data")],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=REPO,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the daemon did not start; its log: {self.log_path}")
        self.url = f"http://127.0.0.1:{json.loads(line)['port']}"
        self.http = httpx.Client(base_url=self.url, timeout=120)

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    def ready(self) -> dict[str, Any]:
        data: dict[str, Any] = self.http.get("/ready").json()
        return data

    def engine_pid(self) -> int:
        pid = self.ready()["engine"]["pid"]
        if pid is None:
            raise RuntimeError("/ready shows no engine process")
        return int(pid)

    def rss(self) -> dict[str, float]:
        daemon, engine = rss_mb(self.proc.pid), rss_mb(self.engine_pid())
        return {"daemon_mb": daemon, "engine_mb": engine, "total_mb": daemon + engine}

    def job(self, job_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self.http.get(f"/v1/jobs/{job_id}").json()
        return data

    def submit(self, path: Path, **form: Any) -> str:
        """Upload ``path`` as a job; ``form`` adds its options (e.g. ``beam_size``)."""
        with path.open("rb") as f:
            r = self.http.post("/v1/jobs", files={"file": (path.name, f)}, data=form)
        r.raise_for_status()
        return str(r.json()["id"])

    def wait(self, job_id: str, *, until: set[str] = FINISHED, timeout_s: float = 3600) -> dict:
        """The job once its status is in ``until``; polled every 0.1 s, as a client would."""
        deadline = time.monotonic() + timeout_s
        while (job := self.job(job_id))["status"] not in until:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout_s} s")
            time.sleep(0.1)
        return job

    def wait_all(self, ids: list[str], timeout_s: float = 3600) -> dict[str, dict]:
        """The jobs once all have finished: one list request per poll (they are the newest)."""
        deadline = time.monotonic() + timeout_s
        wanted = set(ids)
        while True:
            page = self.http.get("/v1/jobs", params={"limit": min(200, len(ids) + 5)}).json()
            jobs = {j["id"]: j for j in page["data"] if j["id"] in wanted}
            if len(jobs) == len(wanted) and all(j["status"] in FINISHED for j in jobs.values()):
                return jobs
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(ids)} jobs not finished after {timeout_s} s")
            time.sleep(0.1)

    def transcribe(self, path: Path, **form: Any) -> tuple[float, dict]:
        """Upload → completed, timed; the finished job."""
        started = time.perf_counter()
        job = self.wait(self.submit(path, **form))
        return time.perf_counter() - started, job

    def openai(self, path: Path) -> float:
        """One OpenAI transcription request, timed end to end."""
        started = time.perf_counter()
        with path.open("rb") as f:
            r = self.http.post(
                "/v1/audio/transcriptions",
                files={"file": (path.name, f)},
                data={"model": "whisper-1"},
            )
        r.raise_for_status()
        return time.perf_counter() - started

    def processing(self, job_id: str) -> None:
        """Wait until the job is processing and at least one more batch has run."""
        steps = self.ready()["batches"]["steps"]
        self.wait(job_id, until={"processing"}, timeout_s=120)
        deadline = time.monotonic() + 120
        while self.ready()["batches"]["steps"] <= steps and time.monotonic() < deadline:
            time.sleep(0.05)


def submit_all(url: str, paths: list[Path]) -> list[str]:
    """Every file uploaded at once, each on its own connection (a 429 is retried
    after its Retry-After); the job ids."""
    files = [(p.name, p.read_bytes()) for p in paths]

    async def upload() -> list[str]:
        # The daemon stores at most 4 uploads per client at once (its
        # max_uploads_per_client) and answers more with 429 + Retry-After: the
        # bench keeps to the limit, and waits a refusal out as a client should.
        slots = asyncio.Semaphore(UPLOADS_PER_CLIENT)
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:

            async def one(name: str, body: bytes) -> str:
                while True:
                    async with slots:
                        r = await client.post("/v1/jobs", files={"file": (name, body)})
                    if r.status_code != 429:
                        break
                    await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                r.raise_for_status()
                return str(r.json()["id"])

            return list(await asyncio.gather(*(one(n, body) for n, body in files)))

    return asyncio.run(upload())


# -- faster-whisper in this process ---------------------------------------------------------


class InProcess:
    """The same model the daemon runs, loaded once here, outside every timing."""

    def __init__(self, device: str) -> None:
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        self.compute_type = "float16" if device == "cuda" else "int8"
        self.model = WhisperModel(
            str(bundled_model_path()),
            device=device,
            compute_type=self.compute_type,
            local_files_only=True,
        )
        self.pipeline = BatchedInferencePipeline(self.model)

    @staticmethod
    def _timed(run: Callable[[], tuple[Any, Any]]) -> tuple[float, str]:
        started = time.perf_counter()
        segments, _ = run()
        text = " ".join(s.text.strip() for s in segments)  # the generator, consumed
        return time.perf_counter() - started, text

    def batched(self, path: Path, **options: Any) -> tuple[float, str]:
        return self._timed(
            lambda: self.pipeline.transcribe(str(path), batch_size=8, beam_size=1, **options)
        )

    def sequential(self, path: Path, **options: Any) -> tuple[float, str]:
        return self._timed(lambda: self.model.transcribe(str(path), **options))


# -- the run --------------------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    sizes: Sizes
    daemon: Daemon
    local: InProcess
    long: Clip  # the long file, with its reference text
    long_s: float
    busy: Path  # the file that keeps the daemon busy while rows 3, 4 and 7 measure
    sentences: list[Clip]
    interactive: Clip  # the OpenAI request's file: jfk.flac, else fox.wav
    idle_cpu_s: float = 0.0  # the engine's CPU-seconds over CPU_WINDOW_S at rest
    raw: dict[str, Any] = field(default_factory=dict)
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(self, metric: str, measured: str, goal: str, met: bool | None) -> None:
        self.rows.append((metric, measured, goal, "n/a" if met is None else "yes" if met else "no"))


def bench_long(b: Bench) -> None:
    """Row 1: the long file through the daemon, batched in-process, sequential in-process."""
    log(f"1  long file ({b.long_s / 60:.1f} min): daemon")
    d_s, job = b.daemon.transcribe(b.long.path)
    log("1  long file: BatchedInferencePipeline (batch 8, beam 1)")
    p_s, p_text = b.local.batched(b.long.path)
    log("1  long file: BatchedInferencePipeline (batch 8, beam 1, 20 s chunks as the daemon)")
    q_s, q_text = b.local.batched(b.long.path, chunk_length=20)
    log("1  long file: WhisperModel.transcribe defaults (beam 5, no VAD)")
    s_s, s_text = b.local.sequential(b.long.path)
    texts = (("daemon", job["text"]), ("batched", p_text), ("batched_20s", q_text))
    wers = {k: wer(b.long.text, t) for k, t in texts}
    wers["sequential"] = wer(b.long.text, s_text)
    b.raw["long_file"] = {
        "audio_s": b.long_s,
        "status": job["status"],
        "seconds": {"daemon": d_s, "batched": p_s, "batched_20s": q_s, "sequential": s_s},
        "wer": wers,
        "texts": {
            "reference": b.long.text,
            "daemon": job["text"],
            "batched": p_text,
            "batched_20s": q_text,
            "sequential": s_text,
        },
    }
    b.row(
        "1a long file: daemon vs batched in-process",
        f"daemon {d_s:.1f} s, batched {p_s:.1f} s: {d_s / p_s:.2f}x",
        "<= 1.05x",
        d_s <= 1.05 * p_s,
    )
    b.row(
        "1a' same, batched with 20 s chunks as the daemon",
        f"daemon {d_s:.1f} s, batched 20 s {q_s:.1f} s: {d_s / q_s:.2f}x",
        "<= 1.05x",
        d_s <= 1.05 * q_s,
    )
    b.row(
        "1b long file: daemon speed-up over sequential",
        f"daemon {d_s:.1f} s, sequential {s_s:.1f} s: {s_s / d_s:.2f}x faster",
        ">= 2.5x faster",
        s_s >= 2.5 * d_s,
    )
    b.row(
        "1c long file WER: daemon vs sequential",
        f"daemon {wers['daemon']:.3f}, sequential {wers['sequential']:.3f}"
        f" (batched {wers['batched']:.3f}, 20 s {wers['batched_20s']:.3f})",
        "daemon <= sequential",
        wers["daemon"] <= wers["sequential"] and job["status"] == "completed",
    )


def bench_clips(b: Bench) -> None:
    """Row 2: short clips submitted at once, against one by one in-process."""
    clips = [b.sentences[i % len(b.sentences)] for i in range(b.sizes.clips)]
    log(f"2  {len(clips)} short clips at once: daemon")
    started = time.perf_counter()
    ids = submit_all(b.daemon.url, [c.path for c in clips])
    jobs = b.daemon.wait_all(ids)
    d_s = time.perf_counter() - started
    log(f"2  {len(clips)} short clips one by one: WhisperModel.transcribe(beam_size=1)")
    local = [b.local.sequential(c.path, beam_size=1) for c in clips]
    l_s = sum(s for s, _ in local)
    d_wer = statistics.mean(wer(c.text, jobs[i]["text"]) for c, i in zip(clips, ids, strict=True))
    l_wer = statistics.mean(wer(c.text, t) for c, (_, t) in zip(clips, local, strict=True))
    audio_s = sum(float(jobs[i]["duration"] or 0) for i in ids)
    b.raw["short_clips"] = {
        "clips": len(clips),
        "audio_s": audio_s,
        "seconds": {"daemon": d_s, "one_by_one": l_s},
        "mean_wer": {"daemon": d_wer, "one_by_one": l_wer},
        "statuses": sorted(j["status"] for j in jobs.values()),
        "most_jobs_in_a_step": b.daemon.ready()["batches"]["most_jobs_in_a_step"],
    }
    b.row(
        f"2a {len(clips)} clips at once: throughput vs one by one",
        f"daemon {d_s:.1f} s, one by one {l_s:.1f} s: {l_s / d_s:.2f}x",
        ">= 2.5x",
        l_s >= 2.5 * d_s,
    )
    b.row(
        "2b clips mean WER: daemon vs one by one",
        f"daemon {d_wer:.3f}, one by one {l_wer:.3f}",
        "<= one by one + 0.02",
        d_wer <= l_wer + 0.02,
    )


def bench_idle(b: Bench) -> None:
    """The engine's CPU at rest, and the interactive request on an idle daemon."""
    log("0  warm-up job; engine CPU at rest")
    b.daemon.transcribe(b.sentences[0].path)
    b.idle_cpu_s = cpu_over(b.daemon.engine_pid(), CPU_WINDOW_S)
    log(f"3  OpenAI request ({b.interactive.path.name}) on an idle daemon")
    idle = [b.daemon.openai(b.interactive.path) for _ in range(3)]
    b.raw["idle"] = {"engine_cpu_s": b.idle_cpu_s, "window_s": CPU_WINDOW_S}
    b.raw["interactive"] = {"file": b.interactive.path.name, "idle_s": idle}


def bench_busy(b: Bench) -> None:
    """Rows 3, 7 and 4a/4b, with the busy file processing: the interactive request,
    status latency under 50 clients, then DELETE."""
    job_id = b.daemon.submit(b.busy)
    b.daemon.processing(job_id)
    log(f"3  OpenAI request ({b.interactive.path.name}) while a long job runs")
    busy_latency(b, job_id)
    log(f"7  GET /v1/jobs/{{id}} from 50 connections for {b.sizes.hammer_s:.0f} s")
    status_latency(b, job_id)
    log("4  DELETE the long job while it runs")
    cancel_processing(b, job_id)
    if b.daemon.job(job_id)["status"] != "cancelled":
        b.notes.append("the busy job finished before the cancel: rows 3, 4a, 7 did not measure")


def status_latency(b: Bench, job_id: str) -> None:
    # wrk (C, one thread) where installed: 50 Python clients on a 2-core machine
    # measure their own event loop more than the daemon.
    if shutil.which("wrk"):
        got = hammer_wrk(b.daemon.url, job_id, clients=50, seconds=b.sizes.hammer_s)
    else:
        got = asyncio.run(hammer(b.daemon.url, job_id, clients=50, seconds=b.sizes.hammer_s))
    got["job_still_processing"] = b.daemon.job(job_id)["status"] == "processing"
    b.raw["status_latency"] = got
    b.row(
        "7  GET /v1/jobs/{id}, 50 clients, batching",
        f"p50 {got['p50_ms']:.1f} ms, p99 {got['p99_ms']:.1f} ms "
        f"({got['requests']} req, {got['client']})",
        "p99 < 100 ms",
        got["p99_ms"] < 100 and got["job_still_processing"],
    )


def hammer_wrk(url: str, job_id: str, *, clients: int, seconds: float) -> dict[str, Any]:
    """The same load from ``wrk -t1 -c<clients> --latency``; its percentiles in ms."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{clients}", f"-d{seconds:.0f}s", "--latency", f"{url}/v1/jobs/{job_id}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    unit = {"us": 0.001, "ms": 1.0, "s": 1000.0}

    def percentile(p: str) -> float:
        value, suffix = re.search(rf"^\s*{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()  # type: ignore[union-attr]
        return float(value) * unit[suffix]

    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise RuntimeError(f"wrk: {bad.group(1)} requests were refused")
    return {
        "client": "wrk",
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": percentile("50"),
        "p99_ms": percentile("99"),
        "wrk_output": out,
    }


async def hammer(url: str, job_id: str, *, clients: int, seconds: float) -> dict[str, Any]:
    """Status requests from ``clients`` concurrent connections; latency percentiles in ms."""
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as client:
        deadline = time.perf_counter() + seconds

        async def one_client() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                (await client.get(f"/v1/jobs/{job_id}")).raise_for_status()
                latencies.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(one_client() for _ in range(clients)))
    latencies.sort()
    return {
        "client": "python",
        "requests": len(latencies),
        "p50_ms": latencies[len(latencies) // 2],
        "p99_ms": latencies[int(len(latencies) * 0.99)],
    }


def long_step_s(b: Bench) -> float:
    """The busy job's mean engine step, measured over its own steps alone: the
    step a request arriving now finds in flight."""
    first = b.daemon.ready()["batches"]
    deadline = time.monotonic() + 60
    while (now := b.daemon.ready()["batches"])["steps"] < first["steps"] + 2:
        if time.monotonic() > deadline:
            raise RuntimeError("the busy job made no progress for 60 s")
        time.sleep(0.2)
    return float((now["busy_s"] - first["busy_s"]) / (now["steps"] - first["steps"]))


def busy_latency(b: Bench, job_id: str) -> None:
    """Up to 3 requests, each while the busy job is still processing; the worst counts."""
    step_s = long_step_s(b)
    busy = []
    while len(busy) < 3 and (still := b.daemon.job(job_id)["status"] == "processing"):
        busy.append(b.daemon.openai(b.interactive.path))
    idle_s = statistics.median(b.raw["interactive"]["idle_s"])
    b.raw["interactive"].update(busy_s=busy, long_step_s=step_s, long_job_still_processing=still)
    if not busy:
        raise RuntimeError("the busy job finished before a request could be made")
    busy_s = max(busy)
    b.row(
        f"3  OpenAI {b.interactive.path.name}: worst busy vs idle",
        f"busy {busy_s:.2f} s, idle {idle_s:.2f} s, step {step_s:.2f} s",
        "busy <= 2 x idle + step",
        busy_s <= 2 * idle_s + step_s,
    )


def cancel_processing(b: Bench, job_id: str) -> None:
    pid = b.daemon.engine_pid()
    started = time.perf_counter()
    r = b.daemon.http.delete(f"/v1/jobs/{job_id}")
    response_s = time.perf_counter() - started
    answered = r.json().get("status") or r.json()["error"]["code"]
    if r.status_code in (200, 202) and answered != "cancelled":
        b.daemon.wait(job_id, until={"cancelled"}, timeout_s=60)
    cancelled_s = time.perf_counter() - started
    cpu_s = cpu_over(pid, CPU_WINDOW_S) - b.idle_cpu_s
    b.raw["cancel"] = {
        "http_status": r.status_code,
        "answered": answered,
        "response_s": response_s,
        "cancelled_s": cancelled_s,
        "engine_cpu_after_s": cpu_s,
    }
    b.row(
        "4a DELETE while processing: until cancelled",
        f"{cancelled_s:.3f} s (HTTP {r.status_code}, said {answered})",
        "< 1 s",
        cancelled_s < 1 and answered == "cancelled",
    )
    b.row(
        f"4b engine CPU in {CPU_WINDOW_S:.0f} s after DELETE, over idle",
        f"{cpu_s:.3f} CPU-s",
        f"~0 (<= {CPU_IDLE_TOLERANCE_S})",
        cpu_s <= CPU_IDLE_TOLERANCE_S,
    )


def bench_disconnect(b: Bench) -> None:
    """Row 4c/4d: a streaming OpenAI client that goes away after its first line."""
    log("4  streaming OpenAI request on a long file; disconnect after the first line")
    pid = b.daemon.engine_pid()
    headers = {"Accept": "application/x-ndjson"}
    data = {"model": "whisper-1", "stream": "true"}
    with httpx.Client(base_url=b.daemon.url, timeout=120) as client, b.busy.open("rb") as f:
        files = {"file": (b.busy.name, f)}
        with client.stream(
            "POST", "/v1/audio/transcriptions", files=files, data=data, headers=headers
        ) as r:
            r.raise_for_status()
            first = json.loads(next(r.iter_lines()))
    closed = time.perf_counter()
    latest: dict[str, Any] = {}
    while time.perf_counter() - closed < 30:
        latest = b.daemon.http.get("/v1/jobs", params={"limit": 1}).json()["data"][0]
        if latest["status"] in FINISHED:
            break
        time.sleep(0.02)
    cancelled_s = time.perf_counter() - closed
    cpu_s = cpu_over(pid, CPU_WINDOW_S) - b.idle_cpu_s
    b.raw["disconnect"] = {
        "first_line_type": first.get("type"),
        "status": latest.get("status"),
        "cancelled_s": cancelled_s,
        "engine_cpu_after_s": cpu_s,
    }
    ok = latest.get("status") == "cancelled"
    b.row(
        "4c stream disconnect: until cancelled",
        f"{cancelled_s:.3f} s",
        "< 1 s",
        ok and cancelled_s < 1,
    )
    b.row(
        f"4d engine CPU in {CPU_WINDOW_S:.0f} s after it, over idle",
        f"{cpu_s:.3f} CPU-s",
        f"~0 (<= {CPU_IDLE_TOLERANCE_S})",
        cpu_s <= CPU_IDLE_TOLERANCE_S,
    )


def bench_fair_share(b: Bench) -> None:
    """Row 9: a clip submitted right behind a long upload (issue 18), against
    each of them alone: the clip's wait, and what it costs the long job."""
    clip = b.interactive.path
    log(f"9  {clip.name} alone, on an idle daemon (warm-up, then 3 runs)")
    b.daemon.transcribe(clip)
    idle_s = statistics.median(b.daemon.transcribe(clip)[0] for _ in range(3))
    log(f"9  the long file alone ({b.long_s / 60:.1f} min)")
    alone_s, _ = b.daemon.transcribe(b.long.path)
    log(f"9  the long file, and {clip.name} once it is decoding")
    started = time.perf_counter()
    long_id = b.daemon.submit(b.long.path)
    b.daemon.processing(long_id)
    clip_s, clip_job = b.daemon.transcribe(clip)
    long_then = b.daemon.job(long_id)
    long_job = b.daemon.wait(long_id)
    shared_s = time.perf_counter() - started
    grew_s = shared_s - alone_s
    b.raw["fair_share"] = {
        "clip": clip.name,
        "clip_s": {"idle": idle_s, "behind_long": clip_s},
        "long_s": {"alone": alone_s, "with_clip": shared_s},
        "long_progress_when_clip_done": long_then["progress"],
        "statuses": [clip_job["status"], long_job["status"]],
        "most_jobs_in_a_step": b.daemon.ready()["batches"]["most_jobs_in_a_step"],
    }
    ran = long_then["status"] == "processing" and clip_job["status"] == "completed"
    b.row(
        f"9a {clip.name} behind a long job vs alone",
        f"{clip_s:.1f} s, alone {idle_s:.1f} s ({clip_s / idle_s:.1f}x)",
        "<= 3x alone + 2 s",
        ran and clip_s <= 3 * idle_s + 2,
    )
    b.row(
        "9b long job's time, the clip beside it",
        f"{shared_s:.1f} s, alone {alone_s:.1f} s ({grew_s:+.1f} s)",
        f"+ <= the clip's {idle_s:.1f} s",
        long_job["status"] == "completed" and grew_s <= idle_s,
    )
    if not ran:
        b.notes.append("row 9: the long job was not processing when the clip finished")


def bench_restart(b: Bench, fox: Path) -> None:
    """Row 5: kill -9 the idle engine; a short job is submitted at once."""
    log("5  kill -9 the engine while idle")
    old = b.daemon.engine_pid()
    started = time.perf_counter()
    os.kill(old, signal.SIGKILL)
    job_id = b.daemon.submit(fox)
    pid_s = done_s = None
    status = ""
    while time.perf_counter() - started < 60 and (pid_s is None or done_s is None):
        now = time.perf_counter() - started
        if pid_s is None and b.daemon.ready()["engine"]["pid"] not in (None, old):
            pid_s = now
        if done_s is None and (status := b.daemon.job(job_id)["status"]) in FINISHED:
            done_s = now
        time.sleep(0.02)
    b.raw["restart"] = {"new_pid_s": pid_s, "job_done_s": done_s, "job_status": status}
    b.row(
        "5  engine kill -9: new pid / fox.wav done",
        f"{fmt_s(pid_s)} / {fmt_s(done_s)} ({status})",
        "both < 3 s",
        pid_s is not None and done_s is not None and done_s < 3 and status == "completed",
    )


def fmt_s(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.2f} s"


def bench_soak(b: Bench) -> None:
    """Row 6: RSS of daemon + engine after 50 and after N short jobs, in waves."""
    n = b.args.soak
    checkpoints = sorted({min(50, n), n})
    log(f"6  {n} short jobs in waves of {WAVE}; RSS at {checkpoints}")
    done, rss, statuses = 0, {}, {}
    while done < n:
        wave = min(WAVE, next(c for c in checkpoints if c > done) - done)
        paths = [b.sentences[(done + i) % len(b.sentences)].path for i in range(wave)]
        jobs = b.daemon.wait_all(submit_all(b.daemon.url, paths))
        for job in jobs.values():
            statuses[job["status"]] = statuses.get(job["status"], 0) + 1
        done += wave
        if done in checkpoints:
            rss[done] = b.daemon.rss()
    first, last = rss[checkpoints[0]]["total_mb"], rss[n]["total_mb"]
    b.raw["memory"] = {"rss": {str(k): v for k, v in rss.items()}, "statuses": statuses}
    b.row(
        f"6  RSS daemon+engine after {checkpoints[0]} / {n} jobs",
        f"{first:.0f} MB / {last:.0f} MB ({(last / first - 1) * 100:+.1f} %)",
        "within 10 %",
        abs(last / first - 1) <= 0.10 and set(statuses) == {"completed"},
    )


# -- output ---------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def print_table(b: Bench) -> None:
    head = ("metric", "measured", "goal", "met")
    widths = [max(len(r[i]) for r in [head, *b.rows]) for i in range(4)]
    for n, r in enumerate([head, *b.rows]):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    for note in b.notes:
        print(f"note: {note}")


def environment(b: Bench) -> dict[str, Any]:
    import ctranslate2
    import faster_whisper

    return {
        "device": b.args.device,
        "compute_type": b.local.compute_type,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "faster_whisper": faster_whisper.__version__,
        "ctranslate2": ctranslate2.__version__,
        "quick": b.args.quick,
    }


# -- main -----------------------------------------------------------------------------------


def run_phase(b: Bench, name: str, phase: Callable[[], None]) -> None:
    """A phase that fails becomes an error row; the others still run."""
    try:
        phase()
    except Exception as exc:
        traceback.print_exc()
        b.raw.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
        b.row(f"{name}: error", f"{type(exc).__name__}: {exc}"[:60], "-", False)


def bench_scale_out(b: Bench) -> None:
    """Throughput with 1 and 2 workers on PostgreSQL (scripts/bench_scale.py), the
    main daemon idle meanwhile. Workers on one machine share its cores: the
    ratio is judged only where each worker has two cores of its own."""
    from bench_scale import run as scale_run  # scripts/ is this script's directory

    jobs = 20 if b.args.quick else 100
    log(f"scale-out: {jobs} short jobs, 1 then 2 workers on {b.args.scale_out.split('@')[-1]}")
    results = scale_run([1, 2], jobs, b.args.scale_out)
    b.raw["scale_out"] = results
    for r in results:
        b.row(
            f"scale-out: {r['workers']} worker(s), {jobs} short jobs",
            f"{r['jobs_per_s']} jobs/s, {r['audio_s_per_s']} audio s/s",
            "all completed",
            r["statuses"] == {"completed": jobs},
        )
    ratio = results[1]["jobs_per_s"] / results[0]["jobs_per_s"]
    enough_cores = (os.cpu_count() or 1) >= 4
    met = (ratio >= 1.5) if enough_cores else None
    b.row("scale-out: 2 workers / 1 worker", f"{ratio:.2f} x", ">= 1.5 x", met)
    if not enough_cores:
        b.notes.append("scale-out ratio not judged: fewer than 2 cores per worker here")


def bench_store_writes(b: Bench) -> None:
    """Per-chunk write time at the start and end of a 3-hour job (scripts/bench_store.py):
    a chunk's write must not grow with the transcript before it."""
    from bench_store import run as store_run  # scripts/ is this script's directory

    hours = 0.5 if b.args.quick else 3.0
    results = store_run(hours)
    b.raw["store_writes"] = results
    for name, r in results.items():
        b.row(
            f"8  {name}: chunk write, first vs last 20 of {r['chunks']}",
            f"{r['first_ms']} ms vs {r['last_ms']} ms ({r['ratio']}x)",
            "last <= 1.5x first",
            r["ratio"] <= 1.5,
        )


def bench_fidelity(b: Bench) -> None:
    """Rows F: WER, time and segment lengths on long audio (scripts/bench_fidelity.py)."""
    from bench_fidelity import bench_rows  # scripts/ is this script's directory

    if b.args.only:  # the daemon's first job warms it up; keep that out of the rows
        b.daemon.transcribe(b.sentences[0].path)
    bench_rows(b, wer, log)


def run(b: Bench) -> None:
    fox = TEST_AUDIO / "fox.wav"
    phases: list[tuple[str, Callable[[], None]]] = [
        ("idle", lambda: bench_idle(b)),
        ("long file", lambda: bench_long(b)),
        ("fidelity", lambda: bench_fidelity(b)),
        ("short clips", lambda: bench_clips(b)),
        ("busy", lambda: bench_busy(b)),
        ("disconnect", lambda: bench_disconnect(b)),
        ("restart", lambda: bench_restart(b, fox)),
        ("memory", lambda: bench_soak(b)),
        ("store writes", lambda: bench_store_writes(b)),
        ("fair share", lambda: bench_fair_share(b)),
    ]
    if b.args.only:
        phases = [(n, f) for n, f in phases if n.replace(" ", "-") in b.args.only]
    if b.args.scale_out:
        phases.append(("scale-out", lambda: bench_scale_out(b)))
    for name, phase in phases:
        run_phase(b, name, phase)
    b.raw["ready_at_end"] = b.daemon.ready()


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--audio-dir", type=Path, default=REPO.parent / "shared" / "audio")
    ap.add_argument("--soak", type=int, help="short jobs for the memory row (default 500)")
    ap.add_argument("--quick", action="store_true", help="small sizes, to smoke-test the script")
    ap.add_argument("--json", type=Path, metavar="OUT", help="write every raw number here")
    ap.add_argument(
        "--scale-out",
        nargs="?",
        const="postgresql://postgres@127.0.0.1:5432/test",
        metavar="PG_URL",
        help="also measure 1 and 2 workers on this PostgreSQL (docs/scaling.md)",
    )
    ap.add_argument(
        "--only",
        type=lambda v: set(v.split(",")),
        metavar="PHASES",
        help="run only these phases, comma-separated: idle, long-file, fidelity, short-clips, "
        "busy, disconnect, restart, memory, store-writes, fair-share",
    )
    ap.add_argument(
        "--mix-minutes", type=float, default=6.0, help="length of the fidelity rows' speech mix"
    )
    ap.add_argument(
        "--mix-seeds",
        type=int,
        default=8,
        help="the fidelity rows' mean over this many 2-minute mixes (0: none)",
    )
    args = ap.parse_args()
    sizes = QUICK if args.quick else FULL
    args.soak = args.soak or sizes.soak
    return args


def prepare(args: argparse.Namespace, tmp: Path) -> Bench:
    """The audio, the in-process model and the daemon: everything outside the timings."""
    sizes = QUICK if args.quick else FULL
    audio_dir = args.audio_dir if (args.audio_dir / "jfk.flac").is_file() else None
    sentences, jfk = known_clips(audio_dir)
    clips = [*sentences, *([jfk] if jfk else [])]
    long, long_s = build_long(clips, sizes.long_s, tmp / "long.wav")
    busy = tmp / "busy.wav"  # only rows 3, 4 and 7 need it: an hour of audio to write
    if not args.only or {"busy", "disconnect"} & args.only:
        build_long(clips, sizes.busy_s, busy)
    log(f"loading tiny.en in this process ({args.device})")
    local = InProcess(args.device)
    log("starting the daemon")
    daemon = Daemon(tmp, args.device)
    b = Bench(args, sizes, daemon, local, long, long_s, busy, sentences, jfk or sentences[0])
    if audio_dir is None:
        b.notes.append(
            f"{args.audio_dir} absent: long file built from tests/audio only, "
            "interactive request uses fox.wav"
        )
    return b


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="sona-bench-") as tmp:
        b = prepare(args, Path(tmp))
        try:
            run(b)
        finally:
            b.daemon.stop()
    b.raw["environment"] = environment(b)
    b.raw["rows"] = [
        dict(zip(("metric", "measured", "goal", "met"), r, strict=True)) for r in b.rows
    ]
    print_table(b)
    if args.json:
        args.json.write_text(json.dumps(b.raw, indent=2, default=str))
    return 0 if all(r[3] != "no" for r in b.rows) else 1  # n/a: not judged here


if __name__ == "__main__":
    raise SystemExit(main())
