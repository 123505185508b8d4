"""The `sona` command: local transcription and the client commands (I1)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path
from typing import Any

import httpx
import pytest

from sona.cli import build_parser
from sona.client import SonaClient
from sona.formats import format_for_output
from sona.progress import JobBar
from sona.remote import ACTIONS, job_table
from tests.audio_factory import concat_wav

REPO = Path(__file__).parent.parent


def sona(
    *args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sona", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def test_transcribe_locally_to_srt(fox_wav: Path, tmp_path: Path, manifest: dict[str, Any]) -> None:
    out = tmp_path / "fox.srt"
    r = sona("transcribe", str(fox_wav), "-o", str(out))  # the extension chooses SRT
    assert r.returncode == 0, r.stderr
    srt = out.read_text()
    assert srt.startswith("1\n00:00:00,000 --> ")
    assert all(k in srt.lower() for k in manifest["fox.wav"]["keywords"])
    assert "100.0%" in r.stderr  # the progress bar reached the end


def test_transcribe_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    r = sona("transcribe", str(tmp_path / "nope.wav"))
    assert r.returncode == 2 and "no such file" in r.stderr


def test_client_commands_against_a_daemon(daemon_factory: Any, fox_wav: Path) -> None:
    d = daemon_factory("--model", "tiny.en")
    env = {"SONA_URL": d.url}
    r = sona("submit", str(fox_wav), "--wait", "--format", "vtt", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("WEBVTT") and "fox" in r.stdout.lower()
    submitted = json.loads(sona("submit", str(fox_wav), "--json", env=env).stdout)
    status = sona("status", submitted["id"], env=env)
    assert status.returncode == 0 and json.loads(status.stdout)["id"] == submitted["id"]
    just_id = sona("submit", str(fox_wav), env=env)  # `id=$(sona submit x.wav)`
    assert just_id.returncode == 0 and re.fullmatch(r"[0-9a-f]{32}\n", just_id.stdout)
    missing = sona("status", "nope", env=env)
    assert missing.returncode == 1 and "nope" in missing.stderr
    loaded = json.loads(sona("models", env=env).stdout)
    # tiny.en, and the OpenAI aliases (whisper-1, …) that run on it
    assert [m["id"] for m in loaded["data"] if not m.get("alias_for")] == ["tiny.en"]
    assert {m["alias_for"] for m in loaded["data"] if m.get("alias_for")} == {"tiny.en"}
    assert json.loads(sona("models", "unload", env=env).stdout)["deleted"] == ["tiny.en"]
    assert json.loads(sona("models", "load", "tiny.en", env=env).stdout)["id"] == "tiny.en"
    unreachable = sona("status", "x", "--url", "http://127.0.0.1:9")
    assert unreachable.returncode == 1 and "sona serve" in unreachable.stderr


def test_config_prints_effective_settings_masked(tmp_path: Path) -> None:
    cfg = tmp_path / "sona.toml"
    cfg.write_text("port = 9999\nmax_attempts = 7\n")
    r = sona(
        "config",
        env={"SONA_CONFIG_FILE": str(cfg), "SONA_PORT": "7777", "SONA_API_KEYS": '["secret-key"]'},
    )
    data = json.loads(r.stdout)
    assert data["port"] == 7777  # env beats file
    assert data["max_attempts"] == 7  # file beats default
    assert data["api_keys"] == ["***"] and "secret-key" not in r.stdout


def test_config_masks_the_store_password() -> None:
    url = "postgresql://sona:pa55word@db.internal:5432/sona?search_path=jobs"
    r = sona("config", env={"SONA_STORE": url})
    assert json.loads(r.stdout)["store"] == (
        "postgresql://sona:***@db.internal:5432/sona?search_path=jobs"
    )
    assert "pa55word" not in r.stdout


def test_non_loopback_bind_without_key_is_refused(tmp_path: Path) -> None:
    r = sona("serve", "--host", "0.0.0.0", "--port", "0", "--data-dir", str(tmp_path))
    assert r.returncode == 2 and "API key" in r.stderr


def _one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    lines = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr and len(lines) == 1, r.stderr
    assert lines[0].startswith("sona: ")
    return lines[0]


def test_config_prints_resolved_paths_and_takes_flags(tmp_path: Path) -> None:
    r = sona("config", "--data-dir", "rel-data", "--device", "cpu", "--log-format", "json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["data_dir"] == str(REPO / "rel-data")  # absolute
    assert data["model_dir"] == str(REPO / "rel-data" / "models")
    assert data["store"] == f"sqlite:{REPO / 'rel-data' / 'sona.db'}"
    assert data["device"] == "cpu" and data["log_format"] == "json"
    cfg = tmp_path / "c.toml"
    cfg.write_text("max_attempts = 5\n")
    assert json.loads(sona("config", "--config", str(cfg)).stdout)["max_attempts"] == 5


def test_config_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("prot = 1\n")
    assert "'prot'" in _one_line_error(sona("config", env={"SONA_CONFIG_FILE": str(bad)}))
    bad.write_text("port = \n")
    assert "not valid TOML" in _one_line_error(sona("config", "--config", str(bad)))
    r = sona("config", "--config", str(tmp_path / "missing.toml"))
    assert r.returncode == 2 and "not found" in _one_line_error(r)
    r = sona("config", env={"SONA_MAX_ATTEMPT": "3"})
    assert r.returncode == 2 and "SONA_MAX_ATTEMPT" in _one_line_error(r)
    r = sona("config", env={"SONA_PORT": "eighty"})
    assert r.returncode == 2 and "port" in _one_line_error(r)
    # Test hooks and the client's variables are not settings, and are allowed.
    env = {"SONA_TEST_CRASH_AT": "", "SONA_URL": "http://127.0.0.1:1", "SONA_API_KEY": "k"}
    assert sona("config", env=env).returncode == 0


def test_transcribe_not_audio_is_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "notaudio.wav"
    fake.write_text("this is not audio at all\n" * 20)
    r = sona("transcribe", str(fake))
    assert r.returncode == 1
    line = _one_line_error(r.__class__(r.args, r.returncode, r.stdout, _without_bar(r.stderr)))
    assert "unsupported_media" in line or "invalid_audio" in line


def _without_bar(stderr: str) -> str:
    return "\n".join(x.split("\r")[-1] for x in stderr.splitlines() if x.split("\r")[-1].strip())


def test_closed_stdout_is_no_traceback(daemon_factory: Any) -> None:
    """`sona config | head -0`, `sona models | head`: the reader is gone."""
    d = daemon_factory("--model", "tiny.en")
    for args in (["config"], ["models", "--url", d.url]):
        proc = subprocess.Popen(
            [sys.executable, "-m", "sona", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        assert proc.stdout is not None
        proc.stdout.close()  # before the child can write anything
        _, err = proc.communicate(timeout=120)
        assert "Traceback" not in err and "BrokenPipe" not in err, err
        assert proc.returncode == 141


def test_submit_options_list_and_output_by_extension(
    daemon_factory: Any, fox_wav: Path, tmp_path: Path
) -> None:
    d = daemon_factory("--model", "tiny.en")
    env = {"SONA_URL": d.url}
    out = tmp_path / "fox.json"
    r = sona(
        "submit", str(fox_wav), "--wait", "--priority", "7", "--metadata", '{"case": "c-1"}',
        "--word-timestamps", "--language", "en", "--format", "verbose_json", "-o", str(out),
        env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""  # the transcript went to the file; the id and the bar to stderr
    job_id = re.search(r"sona: job ([0-9a-f]{32}) ", r.stderr).group(1)  # type: ignore[union-attr]
    words = [w["word"].strip().lower() for w in json.loads(out.read_text())["words"]]
    assert "fox" in "".join(words)
    job = json.loads(sona("status", job_id, env=env).stdout)
    assert job["priority"] == 7 and job["metadata"] == {"case": "c-1"}
    srt = tmp_path / "again.srt"
    assert sona("download", job_id, "-o", str(srt), env=env).returncode == 0
    assert srt.read_text().startswith("1\n00:00:00,000 --> ")
    table = sona("list", env=env)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split()[:3] == ["ID", "STATUS", "PROGRESS"]
    assert row.split()[:3] == [job_id, "completed", "100%"] and row.endswith("fox.wav")
    assert sona("list", "--status", "queued", env=env).stdout == ""
    page = json.loads(sona("list", "--json", "--status", "completed", env=env).stdout)
    assert [j["id"] for j in page["data"]] == [job_id]
    # The daemon sees the callback URL (and refuses one it could never deliver to).
    r = sona("submit", str(fox_wav), "--callback-url", "ftp://127.0.0.1/hook", env=env)
    assert r.returncode == 1 and "callback_url" in r.stderr
    # A format that cannot be written fails before anything is uploaded.
    for bad in (["--format", "docx"], ["--format", "vtt", "-o", str(tmp_path / "x.srt")]):
        r = sona("submit", str(fox_wav), "--wait", *bad, env=env)
        assert r.returncode == 2 and r.stderr.startswith("sona: ") and "job" not in r.stderr
    assert (
        "use one of: text, json, verbose_json, srt, vtt, tsv, jsonl"
        in sona("submit", str(fox_wav), "--wait", "--format", "docx", env=env).stderr
    )
    assert len(json.loads(sona("list", "--json", env=env).stdout)["data"]) == 1  # no new job


def test_bad_formats_fail_without_a_daemon(fox_wav: Path, tmp_path: Path) -> None:
    """No daemon listens at the URL: a check after the upload would say so instead."""
    nobody = ["--url", "http://127.0.0.1:9"]
    for args in (
        ["submit", str(fox_wav), "--wait", "--format", "docx", *nobody],
        [
            "submit",
            str(fox_wav),
            "--wait",
            "-o",
            str(tmp_path / "x.vtt"),
            "--format",
            "srt",
            *nobody,
        ],
        ["submit", str(fox_wav), "-o", str(tmp_path / "x.srt"), *nobody],  # -o needs --wait
        ["download", "0" * 32, "--format", "pdf", *nobody],
        ["transcribe", str(fox_wav), "--format", "docx"],  # no model is loaded either
    ):
        r = sona(*args)
        assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
        assert "unreachable" not in r.stderr and not (tmp_path / "x.vtt").exists()


@pytest.mark.parametrize(
    ("path", "explicit", "chosen"),
    [
        (None, None, "text"),
        ("a.SRT", None, "srt"),
        ("a.vtt", None, "vtt"),
        ("a.json", None, "json"),
        ("a.json", "verbose_json", "verbose_json"),
        ("notes.log", "srt", "srt"),  # an extension that names no format decides nothing
        ("notes", None, "text"),
    ],
)
def test_output_format_from_extension(path: str | None, explicit: str | None, chosen: str) -> None:
    assert format_for_output(path, explicit) == chosen


def test_output_format_conflicts_are_errors() -> None:
    with pytest.raises(ValueError, match="does not match"):
        format_for_output("a.srt", "vtt")
    with pytest.raises(ValueError, match="use one of: text"):
        format_for_output("a.docx", "docx")


async def test_submit_sends_every_option_as_a_form_field(fox_wav: Path) -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"id": "a" * 32, "status": "queued"})

    args = build_parser().parse_args(
        [
            "submit", str(fox_wav), "--model", "tiny.en", "--language", "en",
            "--task", "translate", "--prompt", "Names: Zoë.", "--hotwords", "fox dog",
            "--word-timestamps", "--no-vad", "--diarize", "channels", "--priority", "-3",
            "--metadata", '{"k": [1, 2]}', "--callback-url", "https://example.org/h",
            "--job-id", "b" * 32, "--idempotency-key", "retry-1",
        ]
    )  # fmt: skip
    async with SonaClient("http://127.0.0.1:1", transport=httpx.MockTransport(answer)) as c:
        assert await ACTIONS["submit"](c, args) == 0
    (request,) = seen
    body = (await request.aread()).decode("utf-8", "replace")
    fields = dict(re.findall(r'name="([a-z_]+)"\r\n\r\n([^\r]*)\r\n', body))
    assert fields == {
        "model": "tiny.en",
        "language": "en",
        "task": "translate",
        "prompt": "Names: Zoë.",
        "hotwords": "fox dog",
        "word_timestamps": "true",
        "vad_filter": "false",
        "diarize": "channels",
        "priority": "-3",
        "metadata": '{"k": [1, 2]}',
        "callback_url": "https://example.org/h",
        "job_id": "b" * 32,
    }
    assert request.headers["Idempotency-Key"] == "retry-1"


def test_progress_shows_queue_position_and_eta_when_the_daemon_sends_them() -> None:
    out = StringIO()
    bar = JobBar(out)
    base = {"progress": 0.0, "processed_seconds": 0.0, "duration": 60.0}
    bar.update_from({**base, "status": "queued"})
    assert "queue position" not in out.getvalue() and "ETA" not in out.getvalue()
    bar.update_from({**base, "status": "queued", "queue_position": 3, "eta_s": 42})
    assert "queued 0.0/60.0 s, queue position 3, ETA 00:42" in out.getvalue()
    bar.update_from({**base, "status": "processing", "processed_seconds": 30.0})
    bar.update_from({**base, "status": "completed", "processed_seconds": 59.0})
    bar.close()
    assert " 50.0%|" in out.getvalue() and "100.0%|" in out.getvalue()
    assert "completed 60.0/60.0 s" in out.getvalue()


def test_ctrl_c_while_waiting_leaves_the_job_running(daemon_factory: Any, tmp_path: Path) -> None:
    d = daemon_factory("--model", "tiny.en")
    clips = sorted((REPO / "tests" / "audio").glob("[fmnrw]*.wav"))
    long_wav = concat_wav(clips, tmp_path / "long.wav", repeat=4)  # about 2 minutes
    err_path = tmp_path / "stderr.txt"
    with err_path.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sona", "submit", str(long_wav), "--wait", "--url", d.url],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=REPO,
        )
    for _ in range(1200):  # the upload is done when the id is on stderr
        if match := re.search(r"sona: job ([0-9a-f]{32}) ", err_path.read_text()):
            break
        assert proc.poll() is None, err_path.read_text()
        time.sleep(0.1)
    assert match, err_path.read_text()
    job_id = match.group(1)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    stderr = err_path.read_text()
    assert proc.returncode == 130 and out == "", stderr
    assert f"job {job_id} goes on" in stderr
    assert f"sona cancel {job_id} --url {d.url}" in stderr and "Traceback" not in stderr
    job = asyncio.run(_wait_done(d.url, job_id))
    assert job["status"] == "completed" and not job["cancel_requested"]


async def _wait_done(url: str, job_id: str) -> dict[str, Any]:
    async with SonaClient(url) as client:
        return await client.wait(job_id, timeout_s=600)


def test_list_table_shows_queue_position_and_error_codes() -> None:
    def job(**kw: Any) -> dict[str, Any]:
        base = {"id": "a" * 32, "status": "queued", "progress": 0.0, "duration": 11.0}
        return {**base, "created_at": "2026-12-06T02:26:54.123Z", "file_name": "a.wav", **kw}

    rows = job_table(
        [
            job(queue_position=2),
            job(id="b" * 32),
            job(id="c" * 32, status="failed", error={"code": "invalid_audio", "message": "x"}),
        ]
    ).splitlines()
    assert [r.split()[2] for r in rows[1:]] == ["#2", "0%", "invalid_audio"]
    assert "2026-12-06 02:26:54" in rows[1] and rows[1].endswith("a.wav")
