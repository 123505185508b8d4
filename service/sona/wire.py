"""Facts of the wire that the daemon and the programs talking to it over HTTP
share: ``client.py`` and the MCP tools (``sona_mcp``) read them from here
without loading the daemon, so this module imports nothing, of Sona's or
anyone's.

* the job statuses, and which of them are final;
* the audio containers Sona accepts, told by their first bytes (a client can
  refuse a file before uploading it, with the daemon's own rule)."""

from __future__ import annotations

# In the order a job goes through them.
STATUSES = ("queued", "processing", "completed", "failed", "cancelled")
# A job in one of these never changes again (the event types that end a follow).
FINISHED = frozenset({"completed", "failed", "cancelled"})
# The same set as a SQL list, for ``status IN …`` in both stores.
FINISHED_SQL = "(" + ", ".join(f"'{s}'" for s in STATUSES if s in FINISHED) + ")"

SNIFF_BYTES = 64  # enough of a file's start for ``sniff``
# (offset, magic, name). Playlists (#EXTM3U), HTML, ZIP and everything else
# unknown are refused before any decoder sees them: demuxers of playlist
# formats can be told to read local files.
_MAGIC: list[tuple[int, bytes, str]] = [
    (0, b"RIFF", "wav"),
    (0, b"RF64", "wav"),
    (0, b"fLaC", "flac"),
    (0, b"OggS", "ogg"),
    (0, b"ID3", "mp3"),
    (0, b"\x1a\x45\xdf\xa3", "webm"),
    (4, b"ftyp", "mp4"),
    (0, b"FORM", "aiff"),
    (0, b"caff", "caf"),
    (0, b"#!AMR", "amr"),
    (0, b"0&\xb2u\x8ef\xcf\x11", "asf"),
]


def sniff(head: bytes) -> str | None:
    """The container name for a file starting with ``head``, or None if not audio."""
    for offset, magic, name in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            if name == "wav" and head[8:12] != b"WAVE":
                return None
            if name == "aiff" and head[8:12] not in (b"AIFF", b"AIFC"):
                return None
            return name
    # Bare MPEG audio (mp3 without ID3) and ADTS AAC start with a frame sync.
    if len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0:
        return "mpeg"
    return None
