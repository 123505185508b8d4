"""The local files the MCP tools touch: the audio they upload (checked by its
first bytes) and, in output_dir, the ``<stem>.transcribing.txt`` marker and the
saved transcripts. Plain blocking functions: the tools run them in a thread."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mcp.server.mcpserver.exceptions import ToolError

from sona.wire import SNIFF_BYTES, sniff

STATUS_SUFFIX = ".transcribing.txt"


def sniff_audio(path: Path) -> str | None:
    """The container the first bytes announce, or None when it is not audio we know."""
    with path.open("rb") as f:
        return sniff(f.read(SNIFF_BYTES))  # the daemon's own rule: it refuses the rest


def local_path(name: str) -> Path:
    # Relative paths are the server's cwd's (the agent host starts us in its project).
    return Path(name).expanduser().absolute()


def check_audio(path: Path) -> str:
    """Raise ToolError unless ``path`` is a non-empty audio file; return its kind."""
    if not path.exists():
        raise ToolError(
            f"File not found: {path}. Pass an absolute path, or one relative to {Path.cwd()}."
        )
    if not path.is_file():
        raise ToolError(f"Not a file: {path}. Pass the path of one audio file.")
    if path.stat().st_size == 0:
        raise ToolError(f"File is empty: {path}.")
    try:
        kind = sniff_audio(path)
    except OSError as exc:
        raise ToolError(f"Cannot read {path}: {exc.strerror}.") from exc
    if kind is None:
        raise ToolError(
            f"Not an audio file: {path} (its first bytes match no known audio format). "
            "Supported: WAV, FLAC, Ogg/Opus, MP3, M4A/MP4, WebM/MKV, CAF, AIFF, AMR, WMA."
        )
    return kind


def safe_stem(name: str | None) -> str | None:
    """A file-name stem that stays inside output_dir, or None when nothing usable is left."""
    stem = re.sub(r"[^\w.\- ]", "_", Path((name or "").replace("\\", "/")).stem).strip(" .")
    return stem or None


def read_status_file(path: Path) -> dict[str, str]:
    fields = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def write_status_file(path: Path, fields: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    text = "".join(f"{k}: {v}\n" for k, v in fields.items())
    write_files({tmp: text}, None)
    tmp.replace(path)  # atomic, so a reader never sees half a file


def find_status_file(out_dir: Path, job_id: str) -> Path | None:
    for path in sorted(out_dir.glob(f"*{STATUS_SUFFIX}")):
        try:
            if read_status_file(path).get("job_id") == job_id:
                return path
        except (OSError, UnicodeDecodeError):
            continue  # someone else's file, or being replaced right now
    return None


def write_files(files: dict[Path, str], remove: Path | None) -> None:
    try:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        if remove is not None:
            remove.unlink(missing_ok=True)
    except OSError as exc:
        raise ToolError(
            f"Cannot write {exc.filename}: {exc.strerror}. Pass an output_dir you can write to."
        ) from exc


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
