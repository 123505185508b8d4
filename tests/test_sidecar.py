"""The serve() sidecar helper end to end (B8)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import httpx
import pytest

from sona.sidecar import SidecarError, serve


def test_serve_context_manager(tmp_path: Path, fox_wav: Path) -> None:
    with serve(model="tiny.en", data_dir=tmp_path / "d", stderr=subprocess.DEVNULL) as sona:
        assert sona.port > 0 and httpx.get(f"{sona.url}/ready").status_code == 200

        async def use_client() -> str:
            async with sona.client as client:
                job = await client.submit(fox_wav)
                done = await client.wait(job["id"], timeout_s=120)
                return str(done["text"])

        assert "fox" in asyncio.run(use_client()).lower()
        proc = sona.process
    assert proc.returncode == 0  # drained and exited cleanly on leaving the block


def test_serve_reports_a_failed_start(tmp_path: Path) -> None:
    with pytest.raises(SidecarError, match="did not become ready"):
        serve("--device", "nonsense", data_dir=tmp_path, stderr=subprocess.DEVNULL, timeout=30)
