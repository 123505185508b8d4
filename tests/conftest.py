"""Shared fixtures. Everything is real: SQLite on tmp_path, the bundled tiny.en
model, audio rendered by scripts/make_test_audio.sh and committed in tests/audio."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sona.settings import Settings
from sona.store import open_store
from tests.audio_factory import concat_wav, load_manifest
from tests.pg import pg_schema_url
from tests.webhook_receiver import Receiver

AUDIO = Path(__file__).parent / "audio"
REPO = Path(__file__).parent.parent


@pytest.fixture(scope="session")
def manifest() -> dict[str, Any]:
    return load_manifest()


@pytest.fixture(scope="session")
def fox_wav() -> Path:
    return AUDIO / "fox.wav"


@pytest.fixture(scope="session")
def long_wav(tmp_path_factory: pytest.TempPathFactory, manifest: dict[str, Any]) -> Path:
    """About 130 s of speech: several decoding windows, so progress is visible and
    "mid-job" is really mid-job even on an idle machine (~5 s of work there)."""
    out = tmp_path_factory.mktemp("long") / "long.wav"
    sentences = [AUDIO / name for name in manifest if name != "stereo.wav"]
    concat_wav(sentences, out, gap_s=1.0, repeat=4)
    return out


@pytest.fixture(scope="session")
def longer_wav(tmp_path_factory: pytest.TempPathFactory, manifest: dict[str, Any]) -> Path:
    """About 6.5 min of speech (some 20 chunks), for a test whose action must
    land before the job ends: the engine's two steps of 4 hold 8 chunks at
    once, more than ``long_wav`` has after its first."""
    out = tmp_path_factory.mktemp("longer") / "longer.wav"
    sentences = [AUDIO / name for name in manifest if name != "stereo.wav"]
    concat_wav(sentences, out, gap_s=1.0, repeat=12)
    return out


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Each store in turn: the JobStore contract holds for both (PostgreSQL
    skips, saying why, where no server answers)."""
    if request.param == "sqlite":
        s = await open_store(f"sqlite:{tmp_path / 'db.sqlite'}")
        yield s
        await s.close()
        return
    async with pg_schema_url() as url:
        s = await open_store(url)
        yield s
        await s.close()


@pytest.fixture
def make_settings(tmp_path: Path) -> Any:
    def make(**overrides: Any) -> Settings:
        base: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "model": "tiny.en",
            "poll_interval_s": 0.2,
            "drain_timeout_s": 5,
        }
        base.update(overrides)
        return Settings(**base)

    return make


@dataclass
class Daemon:
    """A `sona serve` subprocess."""

    proc: subprocess.Popen[str]
    data_dir: Path
    port: int
    ready: dict[str, Any]
    stderr_path: Path
    extra_stdout: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def stderr(self) -> str:
        return self.stderr_path.read_text()


def spawn_daemon(
    data_dir: Path, *args: str, env: dict[str, str] | None = None, stdout: Any, stderr: Any
) -> subprocess.Popen[str]:
    """`sona serve --port 0` over ``data_dir``, as a parent application starts it."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sona",
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(data_dir),
            *args,
        ],
        stdout=stdout,
        stderr=stderr,
        text=True,
        cwd=REPO,
        env={**os.environ, "SONA_POLL_INTERVAL_S": "0.2", **(env or {})},
    )


def start_daemon(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> Daemon:
    data_dir.mkdir(parents=True, exist_ok=True)
    stderr_path = data_dir.parent / f"stderr-{time.monotonic_ns()}.log"
    with stderr_path.open("w") as err:  # the child keeps its own descriptor
        proc = spawn_daemon(data_dir, *args, env=env, stdout=subprocess.PIPE, stderr=err)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        raise AssertionError(f"daemon exited before ready: {stderr_path.read_text()[-3000:]}")
    ready = json.loads(line)
    return Daemon(proc, data_dir, ready.get("port", 0), ready, stderr_path)


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Daemon] = []

    def factory(
        *args: str, data_dir: Path | None = None, env: dict[str, str] | None = None
    ) -> Daemon:
        d = start_daemon(data_dir or tmp_path / "data", *args, env=env)
        started.append(d)
        return d

    yield factory
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(10)
        if d.proc.stdout:
            d.proc.stdout.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long tests first: run in parallel (pytest-xdist, `-n 2` in
    pyproject.toml), each takes a worker at once and the short ones fill in
    around it, instead of a soak starting last and running alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def receiver() -> Iterator[Any]:
    """``receiver(script)`` starts one; all are stopped at the end."""
    stack: list[Any] = []

    def start(script: list[str]) -> Receiver:
        ctx = Receiver(script).running()
        stack.append(ctx)
        return ctx.__enter__()

    yield start
    for ctx in reversed(stack):
        ctx.__exit__(None, None, None)
