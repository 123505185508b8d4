"""A real full disk under a running job (A8, RELIABILITY 17): the daemon's data
directory is a small tmpfs, filled to the last byte mid-job. The daemon keeps
answering, and once space returns the job completes without a restart."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.test_daemon import finished, job, log_events, upload, wait_for


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Write until the disk refuses a byte more (unbuffered, in smaller and
    smaller pieces, so nothing is left for a later flush to fail on)."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out:
        for size in (1 << 16, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * size)
    return filler


def test_a_full_disk_mid_job_and_the_job_completes_once_space_returns(
    daemon_factory: Any, small_disk: Path, long_wav: Path, fox_wav: Path
) -> None:
    env = {"SONA_BATCH_SIZE": "1", "SONA_LEASE_S": "2"}
    d = daemon_factory("--model", "tiny.en", data_dir=small_disk, env=env)  # its log: beside
    running = upload(d, long_wav)
    wait_for(d, running["id"], lambda j: j["segments_done"] >= 1)
    filler = fill(small_disk)
    time.sleep(4)  # steps keep coming back; their writes fail
    assert httpx.get(f"{d.url}/health", timeout=10).status_code == 200
    failures = [
        e for e in log_events(d) if e["event"] in ("job.store_failed", "worker.loop_failed")
    ]
    assert failures, "nothing tried to write while the disk was full"
    filler.unlink()
    done = wait_for(d, running["id"], finished, timeout=180)
    assert done["status"] == "completed" and done["crashes"] == 0, done
    assert "conference" in done["text"].lower()
    assert job(d, running["id"])["segments_done"] >= 2
    later = upload(d, fox_wav)
    assert wait_for(d, later["id"], finished)["status"] == "completed"
    assert d.proc.poll() is None  # never restarted
