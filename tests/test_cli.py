"""The `sona` command: local transcription and the client commands (I1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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
    r = sona("transcribe", str(fox_wav), "--format", "srt", "-o", str(out))
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
    submitted = json.loads(sona("submit", str(fox_wav), env=env).stdout)
    status = sona("status", submitted["id"], env=env)
    assert status.returncode == 0 and json.loads(status.stdout)["id"] == submitted["id"]
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
