"""``serve()``: run Sona as a child process of a Python application (B8).

    with serve(model="tiny.en") as sona:
        httpx.get(f"{sona.url}/ready")
        job = await sona.client.submit(path)      # in async code

The child binds a free port (``--port 0``); its one ready line on stdout says
which. Logs go to the parent's stderr unless ``stderr`` says otherwise."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from sona.client import SonaClient, SonaClientError


class SidecarError(SonaClientError):
    """The daemon could not be started. ``code`` is the daemon's own reason from
    its error line (``port_in_use``, ``model_not_found``, ``bad_config``,
    ``data_dir_unwritable``, …), or ``no_ready_line`` when it printed none."""

    def __init__(self, message: str, code: str = "no_ready_line") -> None:
        super().__init__(message, code=code)


class Sidecar:
    """A running ``sona serve`` child: its URL, a client, and a way to stop it."""

    def __init__(self, process: subprocess.Popen[str], ready: dict[str, Any]) -> None:
        self.process = process
        self.port: int = ready["port"]
        self.url = f"http://127.0.0.1:{self.port}"
        self._client: SonaClient | None = None

    @property
    def client(self) -> SonaClient:
        """An async client for this daemon (created on first use)."""
        if self._client is None:
            self._client = SonaClient(self.url)
        return self._client

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (the daemon drains its running job), then SIGKILL after
        ``timeout``. Returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()
        return self.process.returncode

    def __enter__(self) -> Sidecar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _command() -> list[str]:
    exe = shutil.which("sona")
    return [exe] if exe else [sys.executable, "-m", "sona"]


def serve(
    *args: str,
    model: str | None = None,
    data_dir: str | Path | None = None,
    env: dict[str, str] | None = None,
    stderr: int | IO[Any] | None = None,
    timeout: float = 60,
) -> Sidecar:
    """Start ``sona serve --port 0`` and wait for its ready line. Extra ``args``
    are passed through (e.g. ``"--default-model", "small"``)."""
    cmd = [*_command(), "serve", "--port", "0"]
    if model:
        cmd += ["--model", model]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    proc = subprocess.Popen(
        [*cmd, *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, **(env or {})},
    )
    line = _read_line(proc, timeout)
    try:
        ready = json.loads(line)
    except ValueError:
        ready = {}
    if not isinstance(ready, dict) or ready.get("status") != "ready" or "port" not in ready:
        _reap(proc, exited=bool(line))
        error = ready.get("error") if isinstance(ready, dict) else None
        if isinstance(error, dict) and "code" in error:
            raise SidecarError(
                f"sona serve could not start: {error['code']}: {error.get('message')}",
                error["code"],
            )
        raise SidecarError(
            f"sona serve did not become ready (exit code {proc.returncode}, first line "
            f"{line!r}); its stderr says why"
        )
    return Sidecar(proc, ready)


def _reap(proc: subprocess.Popen[str], *, exited: bool) -> None:
    """The child said it failed (it exits by itself) or said nothing in time:
    make sure it is gone."""
    try:
        proc.wait(10 if exited else 0)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout:
        proc.stdout.close()


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The first stdout line, or '' if none came within ``timeout``."""
    box: list[str] = []
    stdout = proc.stdout
    assert stdout is not None
    reader = threading.Thread(target=lambda: box.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return box[0] if box else ""
