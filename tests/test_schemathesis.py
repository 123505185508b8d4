"""RELIABILITY 24: schemathesis against /openapi.json of a live daemon on
loopback, with a fixed seed and every check but ``use_after_free`` (Sona's
DELETE cancels; it does not remove). Zero server errors and zero conformance
failures. Configuration and hooks: tests/schemathesis_run/ (uploads are a real
0.2 s WAV; nothing makes the daemon connect to a generated address)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent / "schemathesis_run"
REPO = Path(__file__).parent.parent
MAX_EXAMPLES = 10  # per operation and phase: about two minutes on one loaded core


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_r24_schemathesis_finds_no_server_error_and_no_conformance_failure(
    daemon_factory: Any, tmp_path: Path
) -> None:
    d = daemon_factory("--model", "tiny.en")
    report = tmp_path / "junit.xml"
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "st"),
            "--config-file",
            str(HERE / "schemathesis.toml"),
            "run",
            f"{d.url}/openapi.json",
            "--checks",
            "all",
            "--exclude-checks",
            "use_after_free",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--workers",
            "2",
            "--report",
            "junit",
            "--report-junit-path",
            str(report),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_run.hooks", "NO_COLOR": "1"},
        timeout=540,
    )
    summary = run.stdout[run.stdout.rfind("SUMMARY") :]
    print(summary)  # the counts, for `pytest -s`
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    assert "Tested:" in summary and "failures" not in summary.splitlines()[-1], summary
    assert report.is_file()
