"""The fault suite's items that no module test covers alone (shared/RELIABILITY.md
3, 6, 16, 26, 30): real daemons, killed or hung on purpose. The long ones (the kill
loop, the soak) carry the ``slow`` marker; CI runs them too. The map of every
item to its test is in docs/architecture.md ("Reliability")."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import socket
import sqlite3
import threading
import time
import wave
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import start_daemon
from tests.test_daemon import finished, upload, wait_for

AUDIO = Path(__file__).parent / "audio"
KILL_LOOP_ITERATIONS = int(os.environ.get("SONA_TEST_KILL_LOOP_ITERATIONS", "300"))
SOAK_JOBS = int(os.environ.get("SONA_TEST_SOAK_JOBS", "500"))
SOAK_JOBS_WAVE = 50


def post(url: str, path: Path, key: str, timeout: float = 30) -> httpx.Response:
    with path.open("rb") as f:
        return httpx.post(
            f"{url}/v1/jobs",
            files={"file": (path.name, f)},
            headers={"Idempotency-Key": key},
            timeout=timeout,
        )


def test_r03_kill_9_during_an_upload_leaves_no_row_and_no_file(
    daemon_factory: Any, tmp_path: Path, fox_wav: Path
) -> None:
    data = tmp_path / "data"
    d = daemon_factory(data_dir=data)
    head = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="fox.wav"\r\n\r\n'
        + fox_wav.read_bytes()[:65536]
    )
    conn = socket.create_connection(("127.0.0.1", d.port))
    conn.sendall(  # the upload begins; the rest never comes before the kill
        b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nIdempotency-Key: k3\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n"
        + f"Content-Length: {len(head) + 500_000}\r\n\r\n".encode()
        + head
    )
    uploads = data / "uploads"
    deadline = time.monotonic() + 30
    while not any(uploads.iterdir()):  # the partial file is being written
        assert time.monotonic() < deadline
        time.sleep(0.02)
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(30)
    conn.close()
    d2 = daemon_factory(data_dir=data)
    assert list(uploads.iterdir()) == []
    assert httpx.get(f"{d2.url}/v1/jobs").json()["data"] == []
    first, again = post(d2.url, fox_wav, "k3"), post(d2.url, fox_wav, "k3")
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["id"] == again.json()["id"]
    assert len(httpx.get(f"{d2.url}/v1/jobs").json()["data"]) == 1


@pytest.mark.slow  # a real daemon or model for 10 s or more
def test_r16_a_hung_decoder_ends_in_timeout_and_the_api_stays_responsive(
    daemon_factory: Any, fox_wav: Path
) -> None:
    env = {"SONA_TEST_HANG_AT": "engine_step:stuck", "SONA_STEP_TIMEOUT_S": "5"}
    d = daemon_factory("--model", "tiny.en", env=env)
    stuck = upload(d, fox_wav, job_id="stuck")
    wait_for(d, stuck["id"], lambda j: j["status"] == "processing", timeout=60)
    engine = httpx.get(f"{d.url}/ready").json()["engine"]["pid"]
    while not finished(j := httpx.get(f"{d.url}/v1/jobs/{stuck['id']}", timeout=10).json()):
        # Meanwhile every probe is answered (a bound, not a latency goal).
        assert httpx.get(f"{d.url}/health", timeout=10).status_code == 200
        time.sleep(0.2)
    assert j["status"] == "failed" and j["error"]["code"] == "timeout", j
    deadline = time.monotonic() + 60  # the hung process is killed and replaced
    while (ready := httpx.get(f"{d.url}/ready").json())["engine"]["pid"] in (engine, None):
        assert time.monotonic() < deadline, ready
        time.sleep(0.1)
    with pytest.raises(ProcessLookupError):
        os.kill(engine, 0)
    later = upload(d, fox_wav)
    assert wait_for(d, later["id"], finished)["status"] == "completed"


def test_r30_a_stopped_engine_shows_on_ready_within_seconds_and_recovers(
    daemon_factory: Any, fox_wav: Path
) -> None:
    """SIGSTOP the engine process: its pings go unanswered and /ready is 503
    with the reason long before step_timeout_s (300 s); SIGCONT brings it back."""
    d = daemon_factory("--model", "tiny.en", env={"SONA_ENGINE_PING_TIMEOUT_S": "2"})
    assert httpx.get(f"{d.url}/ready").status_code == 200
    engine = httpx.get(f"{d.url}/ready").json()["engine"]["pid"]
    os.kill(engine, signal.SIGSTOP)
    try:
        r = _wait_ready_status(d.url, 503)
        body = r.json()
        assert body["reason"].startswith("engine not answering"), body
        assert body["engine"]["silent_s"] >= 2 and body["engine"]["pid"] == engine
    finally:
        os.kill(engine, signal.SIGCONT)
    r = _wait_ready_status(d.url, 200)
    assert r.json()["engine"] == {"pid": engine, "restarts": 0, "silent_s": None}
    job = upload(d, fox_wav)
    assert wait_for(d, job["id"], finished)["status"] == "completed"


def _wait_ready_status(url: str, status: int, bound_s: float = 60) -> httpx.Response:
    """/ready once it answers ``status``; a generous bound, far below step_timeout_s."""
    deadline = time.monotonic() + bound_s
    while (r := httpx.get(f"{url}/ready", timeout=10)).status_code != status:
        assert time.monotonic() < deadline, r.text
        time.sleep(0.2)
    return r


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 2 s of fox.wav ("the quick brown fox"): a short real job."""
    out = tmp_path_factory.mktemp("clip") / "clip.wav"
    with wave.open(str(AUDIO / "fox.wav")) as src, wave.open(str(out), "wb") as dst:
        dst.setparams(src.getparams())
        dst.writeframes(src.readframes(2 * src.getframerate()))
    return out


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_r06_kill_loop(tmp_path: Path, clip: Path) -> None:
    """300 × (start, submit, kill -9 at a random moment, restart): every job the
    daemon acknowledged is there afterwards, and the database is intact. The
    moment is random from the start of the process, so the kills land in
    start-up, recovery, the sweep, mid-upload, at the commit, mid-job.

    Each daemon is forked from a process that has Sona imported already (a
    fork server), so an iteration costs the daemon's start, not Python's; it
    runs in its own process group and the whole group is killed, engine and
    all, as a power cut or an OOM-killed container would be."""
    data = tmp_path / "data"
    data.mkdir()
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["sona.app", "sona.cli", "tests.test_faults"])
    rnd = random.Random(6)
    acknowledged: set[str] = set()
    started = time.monotonic()
    for n in range(KILL_LOOP_ITERATIONS):
        port = _free_port()
        proc = ctx.Process(target=_serve_forked, args=(str(data), port), daemon=True)
        proc.start()
        kill_at = time.monotonic() + rnd.uniform(0.0, 1.0)
        submitter = threading.Thread(
            target=_submit, args=(port, clip, f"k{n}", kill_at, acknowledged), daemon=True
        )
        submitter.start()
        time.sleep(max(0.0, kill_at - time.monotonic()))
        assert proc.pid is not None
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # killed before its setsid(): no group yet, and
            proc.kill()  # no engine either; left alive it would hold the data dir's lock
        proc.join(30)
        assert proc.exitcode is not None, "a killed daemon lived on"
        submitter.join(60)
    print(
        f"kill loop: {KILL_LOOP_ITERATIONS} kills, {len(acknowledged)} jobs acknowledged, "
        f"{time.monotonic() - started:.0f} s"
    )
    assert len(acknowledged) >= KILL_LOOP_ITERATIONS // 10, len(acknowledged)
    with sqlite3.connect(data / "sona.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        ids = {row[0] for row in db.execute("SELECT id FROM jobs")}
    assert acknowledged <= ids, acknowledged - ids
    d = start_daemon(data)  # a clean start after all that: its sweep leaves no orphan
    try:
        with sqlite3.connect(data / "sona.db") as db:
            named = {Path(r[0]).name for r in db.execute("SELECT file_path FROM jobs")}
        assert {f.name for f in (data / "uploads").iterdir()} <= named
        assert httpx.get(f"{d.url}/health").json()["status"] == "ok"
    finally:
        d.proc.kill()
        d.proc.wait(30)
        if d.proc.stdout:
            d.proc.stdout.close()


def _serve_forked(data_dir: str, port: int) -> None:
    """A fork-server child: its own process group, Sona's `serve` on ``port``."""
    os.setsid()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.environ.update({"SONA_POLL_INTERVAL_S": "0.2", "SONA_LEASE_S": "2"})
    from sona.cli import main

    main(["serve", "--port", str(port), "--data-dir", data_dir])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _submit(port: int, clip: Path, key: str, kill_at: float, acked: set[str]) -> None:
    """Submit as soon as the daemon answers; an answer that comes before the
    kill is an acknowledgement the store must keep."""
    url = f"http://127.0.0.1:{port}"
    while time.monotonic() < kill_at:
        try:
            r = post(url, clip, key, timeout=5)
        except httpx.TransportError:
            time.sleep(0.01)  # not listening yet, or killed meanwhile
            continue
        if r.status_code in (200, 202):
            acked.add(r.json()["id"])
        return


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_r26_soak(daemon_factory: Any, clip: Path) -> None:
    """500 short jobs back to back (in waves of 50, so they share batches as a
    busy server's do): all complete; the daemon's RSS after 500 is within 10 %
    of its RSS after 50; its open descriptors do not grow."""
    # Many jobs in flight, so a wave's clips share windows; English named, so no
    # job pays for language detection: the soak is about the daemon, not speed.
    d = daemon_factory("--model", "tiny.en", env={"SONA_MAX_JOBS_IN_FLIGHT": "64"})
    pid = d.proc.pid
    samples: dict[int, tuple[int, int]] = {}
    done, started = 0, time.monotonic()
    while done < SOAK_JOBS:
        count = min(SOAK_JOBS_WAVE, SOAK_JOBS - done)
        wave = [upload(d, clip, language="en") for _ in range(count)]
        for job in wave:
            assert wait_for(d, job["id"], finished, timeout=300)["status"] == "completed"
        done += len(wave)
        print(f"soak: {done} jobs completed at {time.monotonic() - started:.0f} s", flush=True)
        if done in (50, SOAK_JOBS):
            samples[done] = (_rss_kb(pid), _steady_fds(pid))
    (rss_50, fds_50), (rss_end, fds_end) = samples[50], samples[SOAK_JOBS]
    print(
        f"soak: RSS {rss_50} kB after 50 jobs, {rss_end} kB after {SOAK_JOBS}; "
        f"open fds {fds_50} then {fds_end}"
    )
    assert rss_end <= rss_50 * 1.10, (rss_50, rss_end)
    assert fds_end <= fds_50, (fds_50, fds_end)
    listed = httpx.get(f"{d.url}/v1/jobs?status=completed&limit=50").json()
    assert len(listed["data"]) == 50 and listed["has_more"]
    assert all("quick" in j["text"].lower() for j in listed["data"]), listed["data"][0]


def test_r10_oversize_uploads_leave_the_daemons_memory_flat(daemon_factory: Any) -> None:
    """Five uploads of 64 MB, chunked (no length declared) against an 8 MB
    limit: each is refused once 8 MB are counted, and the daemon's resident
    memory does not grow with what was sent."""
    d = daemon_factory("--max-upload-mb", "8")
    boundary = "sona-r10"
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="big.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()

    def body() -> Any:
        yield head + b"RIFF\x00\x00\x00\x00WAVE"
        for _ in range(1024):
            yield b"\x00" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    httpx.get(f"{d.url}/health").raise_for_status()
    before = _rss_kb(d.proc.pid)
    for _ in range(5):
        try:
            r = httpx.post(f"{d.url}/v1/jobs", content=body(), headers=headers, timeout=60)
            assert r.status_code == 413, r.text
        except httpx.TransportError:
            pass  # refused and closed while the client was still sending
    after = _rss_kb(d.proc.pid)
    assert after - before < 32 * 1024, (before, after)  # 320 MB were sent
    assert list((d.data_dir / "uploads").iterdir()) == []


def _steady_fds(pid: int) -> int:
    """Open descriptors, the fewest of a few looks over a second: a connection
    the test just closed may linger a moment; a leaked descriptor stays."""
    counts = []
    for _ in range(5):
        counts.append(len(os.listdir(f"/proc/{pid}/fd")))
        time.sleep(0.2)
    return min(counts)


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")
