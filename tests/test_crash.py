"""Crashes at the worst moments lose nothing (RELIABILITY 2, 3, 4, 5, 30): real
daemons, killed by the env-gated crash points in service/crashpoints.py."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.audio_factory import concat_wav
from tests.conftest import Daemon, spawn_daemon
from tests.test_daemon import finished, log_events, upload, wait_for


def run_until_death(
    data_dir: Path, crash_at: str, *, env: dict[str, str], timeout: float = 120
) -> int:
    """Run a daemon over ``data_dir`` until the crash point ``crash_at`` kills it."""
    proc = spawn_daemon(
        data_dir,
        "--model",
        "tiny.en",
        env={"SONA_TEST_CRASH_AT": crash_at, **env},
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


def test_r04_crash_before_commit_leaves_no_file_and_no_row(
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


def test_r05_crash_after_commit_retry_gets_the_same_job(
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


@pytest.mark.slow  # a real daemon or model for 10 s or more
def test_r02_poison_pill_fails_after_max_attempts_and_the_others_complete(
    daemon_factory: Any, fox_wav: Path, manifest: dict[str, Any]
) -> None:
    """A file that crashes the engine process every time (here: a crash point
    that SIGSEGVs it whenever a batch holds job 'poison') ends failed with
    worker_crashed; the daemon keeps serving and the job that shared its first
    batch completes."""
    d = daemon_factory(
        "--model",
        "tiny.en",
        env={"SONA_TEST_CRASH_AT": "engine_step:poison", "SONA_MAX_ATTEMPTS": "2"},
    )
    poison = upload(d, fox_wav, job_id="poison")
    other = upload(d, fox_wav.parent / "report.wav")
    dead = wait_for(d, poison["id"], finished)
    assert dead["status"] == "failed" and dead["error"]["code"] == "worker_crashed"
    assert dead["crashes"] == 2
    survivor = wait_for(d, other["id"], finished)
    assert survivor["status"] == "completed" and survivor["crashes"] <= 1
    assert all(k in survivor["text"].lower() for k in manifest["report.wav"]["keywords"])
    ready = httpx.get(f"{d.url}/ready").json()
    assert ready["engine"]["restarts"] == 2 and ready["worker_running"]
    later = upload(d, fox_wav)
    assert wait_for(d, later["id"], finished)["status"] == "completed"


@pytest.mark.slow  # a long real-model run
def test_r01_daemon_death_mid_job_does_not_count_toward_worker_crashed(
    daemon_factory: Any, long_wav: Path, tmp_path: Path
) -> None:
    """The daemon itself dies mid-job three times (max_attempts is 2): the job is
    requeued each time, resumes after the chunks already stored, and completes."""
    data = tmp_path / "data"
    env = {"SONA_MAX_ATTEMPTS": "2", "SONA_BATCH_SIZE": "1"}
    d = daemon_factory("--model", "tiny.en", data_dir=data, env=env)
    job = upload(d, long_wav, job_id="unlucky")
    d.stop(signal.SIGKILL)
    for _ in range(3):
        assert run_until_death(data, "mid_job:unlucky", env=env) == 137
    d2 = daemon_factory("--model", "tiny.en", data_dir=data, env=env)
    done = wait_for(d2, job["id"], finished)
    assert done["status"] == "completed" and done["crashes"] == 0
    assert done["attempts"] >= 4
    # Each run stored one more chunk before dying; the last decoded only the rest.
    claimed = [e for e in log_events(d2) if e["event"] == "job.claimed"]
    assert claimed[0]["resume_after_chunks"] >= 3
    verbose = httpx.get(f"{d2.url}/v1/jobs/{job['id']}/transcript?format=verbose_json").json()
    ids = [s["id"] for s in verbose["segments"]]
    assert sorted(ids) == list(range(len(ids))), "segments duplicated or missing"


@pytest.mark.slow  # a long real-model run
def test_engine_killed_mid_job_requeues_it_and_the_daemon_keeps_serving(
    daemon_factory: Any, long_wav: Path, fox_wav: Path
) -> None:
    d = daemon_factory("--model", "tiny.en", env={"SONA_BATCH_SIZE": "1"})
    job = upload(d, long_wav)
    wait_for(d, job["id"], lambda j: j["segments_done"] >= 1)
    engine = httpx.get(f"{d.url}/ready").json()["engine"]["pid"]
    os.kill(engine, signal.SIGKILL)
    assert httpx.get(f"{d.url}/health").json()["status"] == "ok"
    done = wait_for(d, job["id"], finished)
    assert done["status"] == "completed" and (done["attempts"], done["crashes"]) == (2, 1)
    ready = httpx.get(f"{d.url}/ready").json()
    assert ready["engine"]["restarts"] == 1 and ready["engine"]["pid"] != engine
    later = upload(d, fox_wav)
    assert wait_for(d, later["id"], finished)["status"] == "completed"


@pytest.mark.slow  # waits out a model-load timeout
@pytest.mark.parametrize("fault", ["SONA_TEST_CRASH_AT", "SONA_TEST_HANG_AT"])
def test_r30_an_engine_dead_or_hung_in_a_model_load_retries_the_job(
    daemon_factory: Any, fox_wav: Path, tmp_path: Path, fault: str
) -> None:
    """The engine dies (SIGSEGV), or hangs past SONA_MODEL_LOAD_TIMEOUT_S and is
    killed, while loading the model a claimed job waits for: the job is retried
    with the crash counted, and completes."""
    fired = tmp_path / "fired"
    env = {
        fault: "engine_load:tiny.en",
        "SONA_TEST_FAULT_ONCE": str(fired),  # the restarted engine loads it
        # It counts from the request, a fresh engine's start included: room
        # for that on a busy machine, so only the hung load runs past it.
        "SONA_MODEL_LOAD_TIMEOUT_S": "30",
    }
    d = daemon_factory(env=env)  # no --model: the job's claim loads it
    job = upload(d, fox_wav)
    done = wait_for(d, job["id"], finished, timeout=240)
    assert done["status"] == "completed" and (done["attempts"], done["crashes"]) == (2, 1), done
    assert "fox" in done["text"].lower() and fired.exists()
    events = {e["event"] for e in log_events(d)}
    assert "model.load_crashed" in events
    assert ("engine.load_hung" in events) == (fault == "SONA_TEST_HANG_AT")
    assert httpx.get(f"{d.url}/ready").json()["engine"]["restarts"] == 1


@pytest.mark.slow  # long real-model runs around a crash
def test_r30_a_crashed_jobs_rerun_blocks_neither_other_jobs_nor_interactive_requests(
    daemon_factory: Any, long_wav: Path, fox_wav: Path, tmp_path: Path
) -> None:
    """A job crashed the engine once: its re-run is a suspect, one chunk to a
    batch, while another job and an OpenAI request are claimed and complete
    before it does (a solo re-run held every claim until it ended)."""
    longer = concat_wav([long_wav], tmp_path / "longer.wav", repeat=2)
    env = {"SONA_TEST_CRASH_AT": "engine_step:suspect", "SONA_TEST_FAULT_ONCE": str(tmp_path / "f")}
    d = daemon_factory("--model", "tiny.en", env=env)
    upload(d, longer, job_id="suspect")
    wait_for(d, "suspect", lambda j: j["crashes"] == 1 and j["status"] == "processing")
    other = upload(d, fox_wav, priority="5")
    with fox_wav.open("rb") as f:
        r = httpx.post(
            f"{d.url}/v1/audio/transcriptions",
            files={"file": ("fox.wav", f)},
            data={"model": "whisper-1"},
            timeout=120,
        )
    assert r.status_code == 200 and "fox" in r.json()["text"].lower(), r.text
    other_done = wait_for(d, other["id"], finished)
    assert other_done["status"] == "completed" and other_done["crashes"] == 0
    suspect = wait_for(d, "suspect", finished, timeout=300)
    assert suspect["status"] == "completed" and suspect["crashes"] == 1, suspect
    jobs = httpx.get(f"{d.url}/v1/jobs").json()["data"]
    interactive = [j for j in jobs if j["id"] not in ("suspect", other["id"])]
    assert len(interactive) == 1 and interactive[0]["status"] == "completed"
    for j in (other_done, interactive[0]):  # both ran while the suspect did
        assert j["finished_at"] < suspect["finished_at"], (j, suspect)


@pytest.mark.slow  # a real daemon or model for 10 s or more
def test_a_resume_after_the_engine_is_killed_gives_the_same_segments(
    daemon_factory: Any, long_wav: Path
) -> None:
    """A chunk's sentence-sized segments are stored as one unit: a job whose
    engine is killed mid-way resumes after the chunks already stored and ends
    with exactly the segments of an uninterrupted run of the same file."""
    d = daemon_factory("--model", "tiny.en", env={"SONA_BATCH_SIZE": "1"})

    def segments(job_id: str) -> list[tuple[float, float, str]]:
        url = f"{d.url}/v1/jobs/{job_id}/transcript?format=verbose_json"
        return [(s["start"], s["end"], s["text"]) for s in httpx.get(url).json()["segments"]]

    clean = upload(d, long_wav)
    assert wait_for(d, clean["id"], finished)["status"] == "completed"
    job = upload(d, long_wav)
    wait_for(d, job["id"], lambda j: j["segments_done"] >= 1)
    os.kill(httpx.get(f"{d.url}/ready").json()["engine"]["pid"], signal.SIGKILL)
    done = wait_for(d, job["id"], finished)
    assert done["status"] == "completed" and (done["attempts"], done["crashes"]) == (2, 1)
    expected = segments(clean["id"])
    assert len(expected) >= 14  # 24 sentences in ~7 chunks: sentence-sized, not chunk-sized
    assert segments(job["id"]) == expected
