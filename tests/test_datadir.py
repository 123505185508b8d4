"""One data dir, one owner (issue 10): a second daemon on the same SQLite data
dir refuses to start and says why, without touching the first one's files;
the lock dies with its holder, kill -9 included. The orphan sweep removes only
files no live process can be writing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from sona.datadir import DataDirLock
from sona.errors import DataDirInUse
from sona.uploads import UploadDir
from tests.conftest import spawn_daemon
from tests.test_daemon import finished, upload, wait_for


def test_a_second_daemon_on_one_data_dir_refuses_to_start(
    daemon_factory: Any, tmp_path: Path, fox_wav: Path
) -> None:
    data = tmp_path / "data"
    first = daemon_factory(data_dir=data)
    parked = data / "uploads" / "in-flight.part"  # as an upload being written
    parked.write_bytes(b"RIFF")
    err = tmp_path / "second.err"
    with err.open("w") as stderr:
        second = spawn_daemon(data, stdout=subprocess.PIPE, stderr=stderr)
        out, _ = second.communicate(timeout=120)
    assert second.returncode == 1
    line = json.loads(out)  # the start-up error line instead of the ready line
    assert line["status"] == "error" and line["error"]["code"] == "data_dir_in_use"
    message = err.read_text()
    assert "in use by process" in message and str(first.proc.pid) in message, message
    assert parked.exists()  # its sweep never ran
    assert httpx.get(f"{first.url}/health").json()["status"] == "ok"
    first.proc.send_signal(signal.SIGKILL)  # the kernel drops the lock with it
    first.proc.wait(30)
    third = daemon_factory("--model", "tiny.en", data_dir=data)
    assert not parked.exists()  # now an orphan: swept by the new owner
    job = upload(third, fox_wav)
    assert wait_for(third, job["id"], finished)["status"] == "completed"


def test_the_lock_is_held_until_released(tmp_path: Path) -> None:
    first = DataDirLock(tmp_path)
    first.acquire()
    with pytest.raises(DataDirInUse, match=str(os.getpid())):
        DataDirLock(tmp_path).acquire()  # flock is per open file: refused in-process too
    first.release()
    again = DataDirLock(tmp_path)
    again.acquire()
    again.release()


def test_a_shared_upload_dir_sweeps_only_files_past_the_grace_period(tmp_path: Path) -> None:
    uploads = UploadDir(tmp_path / "uploads")
    old_orphan, fresh, kept = (uploads.root / n for n in ("old", "fresh.part", "kept"))
    for path in (old_orphan, fresh, kept):
        path.write_bytes(b"x")
    hour_ago = time.time() - 3600
    os.utime(old_orphan, (hour_ago, hour_ago))
    os.utime(kept, (hour_ago, hour_ago))
    removed = uploads.sweep({str(kept)}, grace_s=600)
    assert removed == [old_orphan]
    assert fresh.exists() and kept.exists()  # someone may be writing it; a job names it
    assert uploads.sweep({str(kept)}) == [fresh]  # sole owner: every orphan goes
