"""The slow-client figure for RELIABILITY 18: N connections trickle a request
head at 1 byte/s against a fresh `sona serve` on loopback, while a normal
client measures its latency; reports how long the slow ones were held.

    python scripts/slow_clients.py [--clients 300] [--header-timeout 10]

Slow clients come from 127.0.0.2-5 (Linux routes all of 127/8 to lo), so the
per-client connection cap does not refuse them before the deadline does."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent


async def trickle(port: int, source: str, closed_after: list[float]) -> None:
    start = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        for byte in b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 10_000:
            writer.write(bytes([byte]))
            await writer.drain()
            try:
                if await asyncio.wait_for(reader.read(1), 1.0) == b"":
                    break  # closed by the server
            except TimeoutError:
                continue
    except (ConnectionResetError, BrokenPipeError):
        pass
    closed_after.append(time.monotonic() - start)
    writer.close()


async def measure(port: int, clients: int) -> dict[str, float]:
    closed: list[float] = []
    slow = [
        asyncio.create_task(trickle(port, f"127.0.0.{2 + i % 4}", closed)) for i in range(clients)
    ]
    await asyncio.sleep(2)  # all connected and trickling
    latencies = []
    async with aiohttp.ClientSession() as session:
        for _ in range(50):
            start = time.monotonic()
            async with session.get(f"http://127.0.0.1:{port}/health") as resp:
                assert resp.status == 200
            latencies.append(time.monotonic() - start)
            await asyncio.sleep(0.1)
    await asyncio.wait_for(asyncio.gather(*slow), 120)
    latencies.sort()
    return {
        "slow_clients": clients,
        "slow_closed": len(closed),
        "slow_held_max_s": round(max(closed), 1),
        "normal_p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
        "normal_max_ms": round(latencies[-1] * 1000, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--header-timeout", type=float, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sona", "serve", "--port", "0", "--data-dir", tmp],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=REPO,
            env={**os.environ, "SONA_HEADER_TIMEOUT_S": str(args.header_timeout)},
        )
        try:
            assert proc.stdout is not None
            port = json.loads(proc.stdout.readline())["port"]
            print(json.dumps(asyncio.run(measure(port, args.clients))))
        finally:
            proc.terminate()
            proc.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
