"""The daemon as a parent process sees it: ready line, probes, models at
runtime, kill -9 recovery, SIGTERM drain (B1–B5, A8, RELIABILITY 1 and 7)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Daemon


def upload(d: Daemon, path: Path, **fields: str) -> dict[str, Any]:
    with path.open("rb") as f:
        r = httpx.post(f"{d.url}/v1/jobs", files={"file": (path.name, f)}, data=fields, timeout=30)
    assert r.status_code == 202, r.text
    return r.json()


def job(d: Daemon, job_id: str) -> dict[str, Any]:
    return httpx.get(f"{d.url}/v1/jobs/{job_id}", timeout=10).json()


def wait_for(d: Daemon, job_id: str, pred: Any, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        j = job(d, job_id)
        if pred(j):
            return j
        assert time.monotonic() < deadline, j
        time.sleep(0.05)


def finished(j: dict[str, Any]) -> bool:
    return j["status"] in ("completed", "failed", "cancelled")


def log_events(d: Daemon) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in d.stderr().splitlines() if ln.startswith("{")]


def test_ready_line_probes_and_clean_exit(daemon_factory: Any, tmp_path: Path) -> None:
    pid = tmp_path / "sona.pid"
    d = daemon_factory("--model", "tiny.en", "--pidfile", str(pid))
    assert d.ready == {"status": "ready", "port": d.port} and d.port > 0
    assert pid.read_text().strip() == str(d.proc.pid)
    health = httpx.get(f"{d.url}/health").json()
    assert health == {"status": "ok", "model_loaded": True, "queue_size": 0, "worker": "running"}
    assert httpx.get(f"{d.url}/ready").status_code == 200
    assert d.stop() == 0
    assert d.proc.stdout is not None and d.proc.stdout.read() == ""  # exactly one line
    lines = [ln for ln in d.stderr().splitlines() if ln.strip()]
    events = [json.loads(ln)["event"] for ln in lines if ln.startswith("{")]
    assert "server.ready" in events and "server.stopped" in events
    assert not pid.exists()


def test_starts_empty_then_loads_and_unloads(daemon_factory: Any) -> None:
    d = daemon_factory()
    assert httpx.get(f"{d.url}/health").json()["model_loaded"] is False
    assert httpx.get(f"{d.url}/ready").status_code == 503
    r = httpx.post(f"{d.url}/v1/models/load", json={"model": "tiny.en"}, timeout=60)
    assert r.status_code == 200 and r.json()["id"] == "tiny.en"
    assert httpx.get(f"{d.url}/ready").status_code == 200
    models = httpx.get(f"{d.url}/v1/models").json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"] if m["alias_for"] is None] == ["tiny.en"]
    aliases = {m["id"]: m["alias_for"] for m in models["data"] if m["alias_for"]}
    assert aliases["whisper-1"] == "tiny.en"  # OpenAI names, listed as aliases
    missing = httpx.post(f"{d.url}/v1/models/load", json={"model": "large-v9"}, timeout=30)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    assert httpx.delete(f"{d.url}/v1/models").json()["deleted"] == ["tiny.en"]
    assert httpx.delete(f"{d.url}/v1/models").json()["deleted"] == []  # idempotent
    assert httpx.get(f"{d.url}/ready").status_code == 503


def test_no_default_model_fails_fast_with_503(daemon_factory: Any, fox_wav: Path) -> None:
    d = daemon_factory(env={"SONA_DEFAULT_MODEL": ""})
    with fox_wav.open("rb") as f:
        r = httpx.post(f"{d.url}/v1/jobs", files={"file": ("fox.wav", f)}, timeout=30)
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_model"
    assert r.headers["x-should-retry"] == "false"


@pytest.mark.slow  # a long real-model run
def test_r01_kill_9_mid_job_requeues_and_completes_once(
    daemon_factory: Any, long_wav: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    env = {"SONA_BATCH_SIZE": "1"}  # one chunk a step: "mid-job" lasts several steps
    d = daemon_factory("--model", "tiny.en", data_dir=data, env=env)
    j = upload(d, long_wav)
    stored = wait_for(d, j["id"], lambda x: x["segments_done"] >= 1)
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(10)
    d2 = daemon_factory("--model", "tiny.en", data_dir=data, env=env)
    done = wait_for(d2, j["id"], finished)
    assert done["status"] == "completed" and done["attempts"] == 2 and done["crashes"] == 0
    resumed = [e for e in log_events(d2) if e["event"] == "job.claimed"][0]
    assert resumed["resume_after_chunks"] >= 1  # attempt 2 decoded only the rest
    verbose = httpx.get(f"{d2.url}/v1/jobs/{j['id']}/transcript?format=verbose_json").json()
    ids = [s["id"] for s in verbose["segments"]]
    assert sorted(ids) == list(range(len(ids))), "segments duplicated or missing"
    assert stored["text"] and done["text"].startswith(stored["text"])
    # Same transcript as a clean run of the same file.
    clean = upload(d2, long_wav)
    clean_done = wait_for(d2, clean["id"], finished)
    assert clean_done["text"] == done["text"]


def test_r07_sigterm_drains_the_running_job(daemon_factory: Any, fox_wav: Path) -> None:
    d = daemon_factory("--model", "tiny.en")
    j = upload(d, fox_wav)
    wait_for(d, j["id"], lambda x: x["status"] == "processing", timeout=30)
    assert d.stop() == 0
    finished_jobs = [e for e in log_events(d) if e["event"] == "job.finished"]
    assert finished_jobs and finished_jobs[0]["status"] == "completed"


def test_r07_sigterm_past_drain_timeout_requeues(
    daemon_factory: Any, longer_wav: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    d = daemon_factory("--model", "tiny.en", "--drain-timeout-s", "0.5", data_dir=data)
    j = upload(d, longer_wav)
    wait_for(d, j["id"], lambda x: x["segments_done"] >= 1)
    assert d.stop() == 0
    d2 = daemon_factory(data_dir=data)  # empty: the job waits in the queue
    after = job(d2, j["id"])
    assert after["status"] in ("queued", "processing") and after["attempts"] <= 1


@pytest.mark.slow  # a real daemon or model for 10 s or more
def test_r07_second_signal_exits_at_once_and_loses_nothing(
    daemon_factory: Any, longer_wav: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    d = daemon_factory("--model", "tiny.en", "--drain-timeout-s", "60", data_dir=data)
    j = upload(d, longer_wav)
    wait_for(d, j["id"], lambda x: x["segments_done"] >= 1)
    d.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    d.proc.send_signal(signal.SIGTERM)
    code = d.proc.wait(10)
    assert code == 128 + signal.SIGTERM
    d2 = daemon_factory("--model", "tiny.en", data_dir=data)
    done = wait_for(d2, j["id"], finished)
    assert done["status"] == "completed"


def test_r23_unix_socket_is_private(daemon_factory: Any, tmp_path: Path) -> None:
    sock = tmp_path / "s.sock"
    d = daemon_factory("--socket", str(sock))
    assert d.ready == {"status": "ready", "socket": str(sock)}
    assert oct(os.stat(sock).st_mode & 0o777) == "0o600"
    transport = httpx.HTTPTransport(uds=str(sock))
    with httpx.Client(transport=transport) as c:
        assert c.get("http://sona/health").json()["status"] == "ok"
    assert d.stop() == 0 and not sock.exists()
