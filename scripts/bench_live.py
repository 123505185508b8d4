#!/usr/bin/env python3
"""Live sessions' latency and capacity (issue 21), against a daemon started here.

    python scripts/bench_live.py [--model tiny.en] [--streams 1,2,4,8] [--json OUT]

Rows (docs/performance.md, "Live sessions"):

* L1: a 5 s utterance (numbers.wav) sent at once and committed, on an idle
  daemon: commit sent → ``…transcription.completed`` received (median of 5).
* L2: the same while a long batch job is processing (worst of 3), and the
  engine step then (``batches.last_step_s`` from ``/ready``): goal busy ≤
  1.5 × idle + one step.
* L3: N sessions at once, each streaming the five test sentences (32 s) at
  real-time pace with server VAD: per-turn latency from the audio's end
  (``speech_stopped`` received) to ``completed``. A count "keeps up" when
  every turn's text comes within 2 s of its end and the last one within 2 s
  of the stream's end."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import aiohttp
import av
import httpx

REPO = Path(__file__).resolve().parent.parent
AUDIO = REPO / "tests" / "audio"
SENTENCES = ("fox.wav", "report.wav", "weather.wav", "numbers.wav", "meeting.wav")
FRAME = 4800  # 100 ms at 24 kHz, 16-bit


def pcm24k(path: Path) -> bytes:
    out = bytearray()
    resampler = av.AudioResampler(format="s16", layout="mono", rate=24_000)
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            for f in resampler.resample(frame):
                out += f.to_ndarray().tobytes()
    for f in resampler.resample(None):
        out += f.to_ndarray().tobytes()
    return bytes(out)


def concat(paths: list[Path], out: Path, gap_s: float, repeat: int = 1) -> Path:
    with wave.open(str(out), "wb") as dst:
        dst.setnchannels(1)
        dst.setsampwidth(2)
        dst.setframerate(16_000)
        for _ in range(repeat):
            for p in paths:
                with wave.open(str(p)) as src:
                    dst.writeframes(src.readframes(src.getnframes()))
                dst.writeframes(bytes(int(gap_s * 16_000) * 2))
    return out


def start(data: Path, model: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sona", "serve", "--port", "0", "--data-dir", str(data)]
        + ["--model", model],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        env={**os.environ, "SONA_LIVE_MAX_SESSIONS": "64"},
    )
    assert proc.stdout is not None
    ready = json.loads(proc.stdout.readline())
    return proc, f"127.0.0.1:{ready['port']}"


async def session(host: str) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    http = aiohttp.ClientSession()
    ws = await http.ws_connect(f"ws://{host}/v1/realtime")
    await ws.receive_json()
    return http, ws


async def send(ws: aiohttp.ClientWebSocketResponse, kind: str, **fields: Any) -> None:
    await ws.send_str(json.dumps({"type": kind, **fields}))


async def utterance(host: str, pcm: bytes) -> float:
    """Seconds from the commit to the text, for ``pcm`` sent at once."""
    http, ws = await session(host)
    update = {"type": "transcription", "audio": {"input": {"turn_detection": None}}}
    await send(ws, "session.update", session=update)
    for at in range(0, len(pcm), FRAME):
        await send(
            ws, "input_audio_buffer.append", audio=base64.b64encode(pcm[at : at + FRAME]).decode()
        )
    t0 = time.monotonic()
    await send(ws, "input_audio_buffer.commit")
    while (await ws.receive_json())[
        "type"
    ] != "conversation.item.input_audio_transcription.completed":
        pass
    took = time.monotonic() - t0
    await ws.close()
    await http.close()
    return took


async def realtime_stream(host: str, pcm: bytes) -> tuple[list[float], float]:
    """Per-turn latency after each speech end, and the last text's lag after the stream."""
    http, ws = await session(host)
    stopped: dict[str, float] = {}
    lags: list[float] = []
    last = 0.0
    all_in = asyncio.Event()

    async def read() -> None:
        nonlocal last
        async for msg in ws:
            event = json.loads(msg.data)
            if event["type"] == "input_audio_buffer.speech_stopped":
                stopped[event["item_id"]] = time.monotonic()
            elif event["type"].endswith("transcription.completed"):
                lags.append(time.monotonic() - stopped.get(event["item_id"], time.monotonic()))
                last = time.monotonic()
                if len(lags) == len(SENTENCES):
                    all_in.set()

    reader = asyncio.create_task(read())
    t0 = time.monotonic()
    silence = bytes(FRAME)
    frames = [pcm[a : a + FRAME] for a in range(0, len(pcm), FRAME)] + [silence] * 10
    for n, frame in enumerate(frames):
        await send(ws, "input_audio_buffer.append", audio=base64.b64encode(frame).decode())
        await asyncio.sleep(max(0.0, t0 + (n + 1) * 0.1 - time.monotonic()))
    end = time.monotonic()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_in.wait(), 60)
    reader.cancel()
    await ws.close()
    await http.close()
    return lags, max(0.0, last - end)


async def busy_rows(host: str, api: httpx.AsyncClient, five: bytes, tmp: Path) -> dict[str, Any]:
    long = concat([AUDIO / s for s in SENTENCES], tmp / "long.wav", 1.0, repeat=12)
    job = (await api.post("/v1/jobs", files={"file": long.read_bytes()})).json()
    for _ in range(600):  # a poll: the daemon is another process
        if (await api.get(f"/v1/jobs/{job['id']}")).json()["status"] == "processing":
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(2.0)  # decoding by now
    busy = [await utterance(host, five) for _ in range(3)]
    step = float((await api.get("/ready")).json().get("batches", {}).get("last_step_s") or 0)
    still = (await api.get(f"/v1/jobs/{job['id']}")).json()["status"]
    await api.delete(f"/v1/jobs/{job['id']}")
    busy_s = None  # the next rows start on a quiet engine: the step in flight ends first
    for _ in range(600):
        now = (await api.get("/ready")).json()["batches"]["busy_s"]
        if now == busy_s:
            break
        busy_s = now
        await asyncio.sleep(1.0)
    return {"busy_s": busy, "step_s": step, "long_job_status": still}


async def stream_rows(host: str, pcm: bytes, counts: list[int]) -> dict[int, Any]:
    rows = {}
    for n in counts:
        runs = await asyncio.gather(*(realtime_stream(host, pcm) for _ in range(n)))
        lags = [lag for turn_lags, _ in runs for lag in turn_lags]
        turns = len(lags)
        keeps = turns == n * len(SENTENCES) and max(lags) <= 2.0 and max(t for _, t in runs) <= 2.0
        rows[n] = {
            "turns": turns,
            "median_lag_s": round(statistics.median(lags), 3),
            "max_lag_s": round(max(lags), 3),
            "keeps_up": keeps,
        }
        print(f"L3 {n} streams: {rows[n]}")
    return rows


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--streams", default="1,2,4,8")
    ap.add_argument("--json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-live-"))
    proc, host = start(tmp / "data", args.model)
    results: dict[str, Any] = {}
    try:
        async with httpx.AsyncClient(base_url=f"http://{host}", timeout=60) as api:
            five = pcm24k(AUDIO / "numbers.wav")
            await utterance(host, five)  # warm-up
            idle = [await utterance(host, five) for _ in range(5)]
            results["idle_s"] = idle
            print(f"L1 idle, 5.4 s utterance: median {statistics.median(idle):.3f} s {idle}")
            results.update(await busy_rows(host, api, five, tmp))
            goal = 1.5 * statistics.median(idle) + results["step_s"]
            met = max(results["busy_s"]) <= goal
            print(
                f"L2 busy: {results['busy_s']} step {results['step_s']:.3f} s; "
                f"goal {goal:.3f} s; met: {met}"
            )
            spoken = pcm24k(concat([AUDIO / s for s in SENTENCES], tmp / "spoken.wav", 1.0))
            counts = [int(x) for x in args.streams.split(",")]
            results["streams"] = await stream_rows(host, spoken, counts)
    finally:
        proc.terminate()
        proc.wait(60)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))  # noqa: ASYNC240 (the end)


if __name__ == "__main__":
    asyncio.run(main())
