"""Crashes at the worst moments lose nothing (RELIABILITY 2, 3, 4, 5): real
daemons, killed by the env-gated crash points in service/crashpoints.py."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Daemon, spawn_daemon
from tests.test_daemon import finished, upload, wait_for


def run_until_death(data_dir: Path, crash_at: str, *, timeout: float = 120) -> int:
    """Run a daemon over ``data_dir`` until the crash point ``crash_at`` kills it."""
    env = {"SONA_TEST_CRASH_AT": crash_at, "SONA_MAX_ATTEMPTS": "2"}
    proc = spawn_daemon(
        data_dir,
        "--model",
        "tiny.en",
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc.wait(timeout)


def post(d: Daemon, path: Path, key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    with path.open("rb") as f:
        return httpx.post(
            f"{d.url}/v1/jobs", files={"file": (path.name, f)}, headers=headers, timeout=30
        )


def test_crash_before_commit_leaves_no_file_and_no_row(
    daemon_factory: Any, fox_wav: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    d = daemon_factory(
        "--model", "tiny.en", data_dir=data, env={"SONA_TEST_CRASH_AT": "before_commit"}
    )
    with contextlib.suppress(httpx.HTTPError):  # the daemon dies mid-request, as intended
        post(d, fox_wav, key="k1")
    assert d.proc.wait(30) == 137
    assert list((data / "uploads").iterdir())  # the orphan is there before the restart
    d2 = daemon_factory(data_dir=data)
    assert list((data / "uploads").iterdir()) == []  # swept at start-up
    assert httpx.get(f"{d2.url}/v1/jobs").json()["data"] == []
    retry = post(d2, fox_wav, key="k1")  # the client's retry creates exactly one job
    assert retry.status_code == 202
    assert len(httpx.get(f"{d2.url}/v1/jobs").json()["data"]) == 1


def test_crash_after_commit_retry_gets_the_same_job(
    daemon_factory: Any, fox_wav: Path, manifest: dict[str, Any], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    d = daemon_factory(data_dir=data, env={"SONA_TEST_CRASH_AT": "after_commit"})
    with contextlib.suppress(httpx.HTTPError):
        post(d, fox_wav, key="k2")
    assert d.proc.wait(30) == 137
    d2 = daemon_factory("--model", "tiny.en", data_dir=data)
    retry = post(d2, fox_wav, key="k2")
    assert retry.status_code == 200  # the existing job, not a new one
    jobs = httpx.get(f"{d2.url}/v1/jobs").json()["data"]
    assert [j["id"] for j in jobs] == [retry.json()["id"]]
    other = next(fox_wav.parent / n for n in manifest if n not in ("fox.wav", "stereo.wav"))
    assert post(d2, other, key="k2").status_code == 409
    assert wait_for(d2, retry.json()["id"], finished)["status"] == "completed"


def test_poison_pill_fails_after_max_attempts_and_the_queue_moves_on(
    daemon_factory: Any, fox_wav: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    d = daemon_factory(
        "--model",
        "tiny.en",
        data_dir=data,
        env={"SONA_TEST_CRASH_AT": "mid_job", "SONA_MAX_ATTEMPTS": "2"},
    )
    job = upload(d, fox_wav)
    assert d.proc.wait(60) == 137  # attempt 1 killed the process
    assert run_until_death(data, "mid_job") == 137  # attempt 2, on restart, too
    d3 = daemon_factory("--model", "tiny.en", data_dir=data, env={"SONA_MAX_ATTEMPTS": "2"})
    dead = httpx.get(f"{d3.url}/v1/jobs/{job['id']}").json()
    assert dead["status"] == "failed" and dead["error"]["code"] == "worker_crashed"
    assert dead["attempts"] == 2
    later = upload(d3, fox_wav)
    assert wait_for(d3, later["id"], finished)["status"] == "completed"
