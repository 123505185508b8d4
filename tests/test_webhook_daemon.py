"""Webhooks through real daemons (E2, B5): a delivery survives ``kill -9``
between attempts and a crash right after the terminal write; SIGTERM sends
what is due. The receiver is a real server on 127.0.0.1; jobs run tiny.en."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from tests.conftest import Daemon, spawn_daemon
from tests.test_daemon import finished, log_events, upload, wait_for
from tests.webhook_receiver import Receiver

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


def hooks(d: Daemon, job_id: str) -> list[dict[str, Any]]:
    return httpx.get(f"{d.url}/v1/jobs/{job_id}/webhooks", timeout=10).json()["data"]


def wait_hooks(d: Daemon, job_id: str, pred: Any, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        data = hooks(d, job_id)
        if data and pred(data[0]):
            return data[0]
        assert time.monotonic() < deadline, data
        time.sleep(0.05)


@pytest.fixture
def rx_factory() -> Iterator[Any]:
    started: list[Any] = []

    def start(script: list[str]) -> Receiver:
        ctx = Receiver(script).running()
        started.append(ctx)
        return ctx.__enter__()

    yield start
    for ctx in reversed(started):
        ctx.__exit__(None, None, None)


def test_kill_9_between_attempts_still_delivers_after_restart(
    daemon_factory: Any, rx_factory: Any, fox_wav: Path, tmp_path: Path
) -> None:
    rx = rx_factory(["500"])  # then 200
    data = tmp_path / "data"
    # A retry 2.5-5 s after the first attempt: the kill lands between the two.
    env = {"SONA_WEBHOOK_SECRET": SECRET, "SONA_WEBHOOK_BACKOFF_S": "5"}
    d = daemon_factory("--model", "tiny.en", data_dir=data, env=env)
    job = upload(d, fox_wav, callback_url=rx.url)
    first = wait_hooks(d, job["id"], lambda h: h["attempts"] == 1)
    d.stop(signal.SIGKILL)
    assert first["state"] == "pending" and first["last_status_code"] == 500
    assert len(rx.posts()) == 1  # the retry had not gone out before the kill
    d2 = daemon_factory(data_dir=data, env=env)
    done = wait_hooks(d2, job["id"], lambda h: h["state"] == "delivered")
    hits = rx.posts()
    assert len(hits) == 2 and done["attempts"] == 2
    assert hits[0].headers["webhook-id"] == hits[1].headers["webhook-id"] == first["id"]
    event = Webhook(SECRET).verify(hits[1].body, hits[1].headers)
    assert event["type"] == "job.completed" and event["data"]["job_id"] == job["id"]


def test_crash_after_the_terminal_write_loses_and_invents_nothing(
    daemon_factory: Any, rx_factory: Any, fox_wav: Path, tmp_path: Path
) -> None:
    """The daemon dies right after committing the job's end (and so its outbox
    row), before anything is sent: after a restart exactly one event goes out."""
    rx = rx_factory([])
    data = tmp_path / "data"
    proc = spawn_daemon(
        data,
        "--model",
        "tiny.en",
        env={"SONA_TEST_CRASH_AT": "after_terminal_write:hooked"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    port = json.loads(proc.stdout.readline())["port"]
    with fox_wav.open("rb") as f:
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/jobs",
            files={"file": (fox_wav.name, f)},
            data={"job_id": "hooked", "callback_url": rx.url},
            timeout=30,
        )
    assert r.status_code == 202
    assert proc.wait(120) == 137
    proc.stdout.close()
    assert rx.posts() == []  # died before sending
    d2 = daemon_factory(data_dir=data)
    assert wait_for(d2, "hooked", finished)["status"] == "completed"
    done = wait_hooks(d2, "hooked", lambda h: h["state"] == "delivered")
    time.sleep(1.0)  # five poll intervals: a duplicate would have gone out by now
    assert len(rx.posts()) == 1 and len(hooks(d2, "hooked")) == 1
    assert json.loads(rx.posts()[0].body)["type"] == "job.completed"
    assert done["attempts"] == 1
    events = [e["event"] for e in log_events(d2)]
    assert events.count("webhook.unsigned") == 1 and events.count("webhook.delivered") == 1


@pytest.mark.slow  # a real daemon or model for 10 s or more
def test_sigterm_sends_the_webhook_of_the_job_it_lets_finish(
    daemon_factory: Any, rx_factory: Any, long_wav: Path
) -> None:
    """B5: SIGTERM mid-job; the drain lets the job finish, and its webhook,
    due only then, goes out before the process exits."""
    rx = rx_factory([])
    d = daemon_factory("--model", "tiny.en", env={"SONA_DRAIN_TIMEOUT_S": "120"})
    job = upload(d, long_wav, callback_url=rx.url)
    wait_for(d, job["id"], lambda j: j["segments_done"] >= 1)
    assert d.stop(signal.SIGTERM, timeout=150) == 0
    [hit] = rx.posts()  # sent before the daemon exited
    assert json.loads(hit.body)["data"]["status"] == "completed"
