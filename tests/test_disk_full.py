"""A real full disk under a running job (A8, RELIABILITY 17): the daemon's data
directory is a small tmpfs, filled to the last byte mid-job. The daemon keeps
answering, and once space returns the job completes without a restart."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sona.errors import StorageFull
from sona.jobs import Status
from sona.store.sqlite import SqliteStore
from tests.test_daemon import finished, job, log_events, upload, wait_for
from tests.test_store_contract import new_job


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


@pytest.mark.slow  # a long real-model run
def test_r17_a_full_disk_mid_job_and_the_job_completes_once_space_returns(
    daemon_factory: Any, small_disk: Path, long_wav: Path, fox_wav: Path
) -> None:
    env = {"SONA_BATCH_SIZE": "1", "SONA_LEASE_S": "2"}
    d = daemon_factory("--model", "tiny.en", data_dir=small_disk, env=env)  # its log: beside
    running = upload(d, long_wav)
    wait_for(d, running["id"], lambda j: j["segments_done"] >= 1)
    filler = fill(small_disk)
    wait_store_failed(d)  # steps keep coming back; their writes fail
    health = httpx.get(f"{d.url}/health", timeout=10)
    assert health.status_code == 200 and health.json()["worker"] in ("running", "retrying")
    # Lease renewals fail too: the worker retries, and is not ready meanwhile.
    ready = wait_ready(d, lambda r: r["worker"] == "retrying")
    assert ready["status"] == "not_ready"
    filler.unlink()
    done = wait_for(d, running["id"], finished, timeout=180)
    assert done["status"] == "completed" and done["crashes"] == 0, done
    assert "conference" in done["text"].lower()
    assert job(d, running["id"])["segments_done"] >= 2
    later = upload(d, fox_wav)
    assert wait_for(d, later["id"], finished)["status"] == "completed"
    assert d.proc.poll() is None  # never restarted
    assert wait_ready(d, lambda r: r["worker"] == "running")["status"] == "ready"


def wait_store_failed(d: Any, timeout: float = 120) -> None:
    """Until the log shows a write that the full disk refused."""
    deadline = time.monotonic() + timeout
    failed = ("job.store_failed", "worker.loop_failed")
    while not any(e["event"] in failed for e in log_events(d)):
        assert time.monotonic() < deadline, "nothing tried to write while the disk was full"
        time.sleep(0.1)


def wait_ready(d: Any, pred: Any, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not pred(body := httpx.get(f"{d.url}/ready", timeout=10).json()):
        assert time.monotonic() < deadline, body
        time.sleep(0.1)
    return body


async def test_a_full_disk_at_commit_is_storage_full_and_the_store_recovers(
    small_disk: Path,
) -> None:
    """SQLITE_FULL anywhere in a transaction, the COMMIT included, is StorageFull
    (507 at submit), and the failed transaction is rolled back: once space
    returns the same connection writes again, no restart."""
    store = await SqliteStore.open(str(small_disk / "sona.db"))
    try:
        filler = fill(small_disk)
        refused = None
        for n in range(20_000):  # the WAL may hold room for a few rows first
            try:
                await store.create(new_job(id=f"j{n}", file_path="/x" * 500))
            except StorageFull as exc:
                refused = exc
                break
        assert refused is not None, "the disk never refused a write"
        assert isinstance(refused.__cause__, sqlite3.Error)
        filler.unlink()
        job, created = await store.create(new_job(id="after"))
        assert created and (await store.get("after")).status == Status.QUEUED
        claim = await store.claim(worker_id="w", prefer_models=[], lease_s=30)
        assert claim is not None
    finally:
        await store.close()


def test_r17_a_full_disk_at_submit_is_507_and_leaves_no_partial_file(
    daemon_factory: Any, small_disk: Path, fox_wav: Path
) -> None:
    d = daemon_factory(data_dir=small_disk)
    filler = fill(small_disk)
    with fox_wav.open("rb") as f:
        r = httpx.post(f"{d.url}/v1/jobs", files={"file": ("fox.wav", f)}, timeout=60)
    assert r.status_code == 507 and r.json()["error"]["code"] == "insufficient_storage", r.text
    assert r.headers["x-should-retry"] == "false"
    assert list((small_disk / "uploads").iterdir()) == []
    assert httpx.get(f"{d.url}/v1/jobs").json()["data"] == []
    filler.unlink()
    assert upload(d, fox_wav)["status"] == "queued"  # space is back: accepted again
