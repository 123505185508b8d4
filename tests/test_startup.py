"""`sona serve` as a parent process or a supervisor sees it start or fail
(B3): one compact JSON line on stdout either way, a log line on stderr, and
an exit within seconds when it cannot serve. Every case spawns it for real."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from sona.sidecar import SidecarError, serve
from tests.conftest import spawn_daemon

START_BOUND_S = 60  # generous: the machine is shared; a hang is what we catch


def _failed_start(
    data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[dict[str, Any], str, int, list[dict[str, Any]]]:
    proc = spawn_daemon(data_dir, *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=START_BOUND_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("sona serve neither served nor exited") from None
    lines = out.splitlines()
    assert len(lines) == 1, out
    logs = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    return json.loads(lines[0]), lines[0], proc.returncode, logs


def _check_error_line(line: str, parsed: dict[str, Any], code: str) -> str:
    assert parsed["status"] == "error" and parsed["error"]["code"] == code, line
    message = parsed["error"]["message"]
    compact = json.dumps(
        {"status": "error", "error": {"code": code, "message": message}}, separators=(",", ":")
    )
    assert line == compact  # byte for byte, as docs/deployment.md shows it
    return str(message)


def test_ready_line_is_compact_byte_for_byte(tmp_path: Path) -> None:
    proc = spawn_daemon(tmp_path / "d", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        port = json.loads(line)["port"]
        assert line == f'{{"status":"ready","port":{port}}}\n'
    finally:
        proc.terminate()
        proc.communicate(timeout=60)


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        parsed, line, rc, logs = _failed_start(
            tmp_path / "d", "--port", str(port), "--model", "tiny.en"
        )
        took = time.monotonic() - started
    message = _check_error_line(line, parsed, "port_in_use")
    assert str(port) in message and rc == 1
    failed = [x for x in logs if x["event"] == "server.start_failed"]
    assert len(failed) == 1 and failed[0]["code"] == "port_in_use"
    # The port is checked before the model loads: no engine was started at all.
    assert not any(x["event"] == "engine.started" for x in logs), logs
    assert took < START_BOUND_S


def test_bad_model(tmp_path: Path) -> None:
    parsed, line, rc, logs = _failed_start(tmp_path / "d", "--model", "no-such-model")
    message = _check_error_line(line, parsed, "model_not_found")
    assert "no-such-model" in message and rc == 1
    assert any(x["event"] == "server.start_failed" for x in logs)


def test_unwritable_data_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    # A path under a regular file: unwritable even for root, where modes are not.
    parsed, line, rc, _ = _failed_start(blocker / "data")
    _check_error_line(line, parsed, "data_dir_unwritable")
    assert rc == 1


@pytest.mark.parametrize(
    ("content", "needle"),
    [("prot = 1\n", "'prot'"), ("port = [\n", "not valid TOML"), (None, "not found")],
)
def test_bad_config_file(tmp_path: Path, content: str | None, needle: str) -> None:
    cfg = tmp_path / "sona.toml"
    if content is not None:
        cfg.write_text(content)
    parsed, line, rc, _ = _failed_start(tmp_path / "d", env={"SONA_CONFIG_FILE": str(cfg)})
    assert needle in _check_error_line(line, parsed, "bad_config")
    assert rc == 2


def test_unknown_environment_variable(tmp_path: Path) -> None:
    parsed, line, rc, _ = _failed_start(tmp_path / "d", env={"SONA_PROT": "1"})
    assert "SONA_PROT" in _check_error_line(line, parsed, "bad_config") and rc == 2


def test_sidecar_raises_with_the_daemons_code(tmp_path: Path) -> None:
    with pytest.raises(SidecarError, match="no-such-model") as info:
        serve(model="no-such-model", data_dir=tmp_path, stderr=subprocess.DEVNULL, timeout=60)
    assert info.value.code == "model_not_found"


@pytest.mark.parametrize("value", ["sk-one", "sk-one,sk-two", '["sk-unterminated'])
def test_r34_malformed_api_keys_is_bad_config(tmp_path: Path, value: str) -> None:
    """RELIABILITY 34: the ready line's error, exit 2, and the value (a key) unsaid."""
    parsed, line, rc, _ = _failed_start(tmp_path / "d", env={"SONA_API_KEYS": value})
    message = _check_error_line(line, parsed, "bad_config")
    assert "SONA_API_KEYS" in message and "sk-" not in message and rc == 2
