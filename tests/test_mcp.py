"""The MCP tools as an agent's host sees them (D1–D4): the SDK's own client
spawns ``sona mcp`` over stdio and talks to a real daemon running
the tiny.en model."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult

from sona_mcp.files import safe_stem, sniff_audio
from tests.webhook_receiver import Receiver

# The installed console script when there is one (pip install -e puts it next to
# the interpreter), else the same entry point through the module.
_SCRIPT = Path(sys.executable).with_name("sona")
SONA = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "sona"]

TOOLS = {
    "transcribe_wav",
    "check_transcription_status",
    "wait_for_transcription",
    "cancel_transcription",
    "list_transcriptions",
    "search_transcripts",
}
UNREACHABLE = "http://127.0.0.1:9"
REPO = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of one ``sona serve --port 0`` for the module: the model loads once."""
    root = tmp_path_factory.mktemp("mcp")
    log = root / "stderr.log"
    cmd = [sys.executable, "-m", "sona", "serve", "--port", "0", "--data-dir", str(root)]
    with log.open("w") as err:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [*cmd, "--model", "tiny.en"], stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO
        )
    assert proc.stdout is not None
    try:
        ready = json.loads(proc.stdout.readline() or "{}")
        assert ready.get("status") == "ready", log.read_text()[-3000:]
        yield f"http://127.0.0.1:{ready['port']}"
    finally:
        proc.terminate()
        code = proc.wait(60)
        proc.stdout.close()
    assert code == 0, log.read_text()[-3000:]


def server_env(url: str) -> dict[str, str]:
    # The SDK hands a child only a few safe variables; the rest must be explicit.
    return {"SONA_URL": url, "PYTHONPATH": str(REPO), "SONA_API_KEY": ""}


@asynccontextmanager
async def mcp_client(url: str, cwd: Path) -> AsyncIterator[Client]:
    params = StdioServerParameters(
        command=SONA[0], args=[*SONA[1:], "mcp"], env=server_env(url), cwd=cwd
    )
    async with Client(params, read_timeout_seconds=90) as client:
        yield client


def files_in(folder: Path) -> list[Path]:
    return sorted(folder.glob("*"))


def text_of(result: CallToolResult) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


async def call(client: Client, tool: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    assert not result.is_error, text_of(result)
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def refused(client: Client, tool: str, **args: Any) -> str:
    """The ToolError text the agent reads; never a traceback."""
    result = await client.call_tool(tool, args)
    assert result.is_error, result
    text = text_of(result)
    assert "Traceback" not in text and text.strip()
    return text


async def until_finished(client: Client, job_id: str, **args: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        out = await call(client, "check_transcription_status", job_id=job_id, **args)
        if out["status"] not in ("queued", "processing"):
            return out
        assert time.monotonic() < deadline, out
        assert out["message"] and "partial_text" in out
        await asyncio.sleep(0.2)


async def test_transcribe_then_check_saves_the_transcript(
    daemon: str, fox_wav: Path, tmp_path: Path, manifest: dict[str, Any]
) -> None:
    assert {"fox", "lazy"} <= set(manifest["fox.wav"]["keywords"])
    async with mcp_client(daemon, tmp_path) as client:
        assert {t.name for t in (await client.list_tools()).tools} == TOOLS
        started = await call(client, "transcribe_wav", filename=str(fox_wav))
        assert started["status"] == "queued" and started["service_url"] == daemon
        marker = tmp_path / "transcriptions" / "fox.transcribing.txt"
        assert started["status_file"] == str(marker)
        fields = dict(line.split(": ", 1) for line in marker.read_text().splitlines())
        assert fields["job_id"] == started["job_id"] and fields["status"] == "queued"
        assert fields["service_url"] == daemon and fields["source_file"] == str(fox_wav)
        assert fields["submitted_at"].endswith("Z")

        done = await until_finished(client, started["job_id"], formats=["srt", "vtt"])
        assert done["status"] == "completed", done
        out = tmp_path / "transcriptions"
        assert done["transcript_file"] == str(out / "fox.txt")
        text = (out / "fox.txt").read_text().lower()
        for word in ("fox", "lazy"):
            assert word in text and word in done["transcript"].lower()
        assert (out / "fox.srt").read_text().startswith("1\n")
        assert (out / "fox.vtt").read_text().startswith("WEBVTT")
        assert not marker.exists()

        # Finished jobs cannot be cancelled; asking again still answers from the service.
        assert "already completed" in await refused(
            client, "cancel_transcription", job_id=started["job_id"]
        )
        again = await call(client, "check_transcription_status", job_id=started["job_id"])
        assert again["status"] == "completed" and again["transcript_file"].endswith("fox.txt")
        listed = await call(client, "list_transcriptions", status="completed")
        assert started["job_id"] in [j["job_id"] for j in listed["jobs"]]


async def test_search_finds_a_word_with_its_times_over_http_the_cli_and_mcp(
    daemon: str, fox_wav: Path, tmp_path: Path
) -> None:
    """Two real jobs; "fox" is said in one: the search returns that job's
    segment, with the times the transcript gives it; `sona search` and the
    MCP tool show the same hits."""
    from sona.client import SonaClient

    tag = {"suite": tmp_path.name}  # this test's jobs only: the daemon is shared
    weather = REPO / "tests" / "audio" / "weather.wav"
    async with SonaClient(daemon) as api:
        ids = [(await api.submit(p, metadata=tag))["id"] for p in (fox_wav, weather)]
        for job_id in ids:
            assert (await api.wait(job_id, timeout_s=120))["status"] == "completed"
        verbose = json.loads(await api.transcript(ids[0], "verbose_json"))
        page = await api.search("FOX", metadata=tag)
        assert (await api.search("sunny", metadata=tag))["data"][0]["job_id"] == ids[1]
        assert (await api.search("fox sunny", metadata=tag))["data"] == []
    [hit] = page["data"]
    said = [s for s in verbose["segments"] if "fox" in s["text"].lower()]
    assert [(hit["job_id"], hit["start"], hit["end"], hit["text"])] == [
        (ids[0], s["start"], s["end"], s["text"]) for s in said
    ]
    assert 0 <= hit["start"] < hit["end"] <= verbose["duration"] + 0.5
    assert [hit["text"][a:b].lower() for a, b in hit["marks"]] == ["fox"]
    assert hit["file_name"] == "fox.wav" and hit["metadata"] == tag

    def sona_search(*flags: str) -> subprocess.CompletedProcess[str]:
        cmd = [*SONA, "search", "fox", "--url", daemon, "--metadata", json.dumps(tag), *flags]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO)

    cli = await asyncio.to_thread(sona_search, "--json")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["data"] == page["data"]
    cli = await asyncio.to_thread(sona_search)
    assert cli.stdout.startswith(f"{ids[0]}  #{hit['segment']}  ") and "[fox]" in cli.stdout.lower()

    async with mcp_client(daemon, tmp_path) as client:
        out = await call(client, "search_transcripts", query="fox", metadata=tag)
        assert out["has_more"] is False
        assert out["hits"] == [
            {k: hit[k] for k in ("job_id", "segment", "start", "end", "text", "file_name",
                                 "created_at", "metadata")}
        ]  # fmt: skip
        text = await refused(client, "search_transcripts", query='"unbalanced')
        assert "invalid_query" in text


async def test_every_refusal_is_an_actionable_tool_error(
    daemon: str, fox_wav: Path, tmp_path: Path
) -> None:
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("these are not the bytes you are looking for\n")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    async with mcp_client(daemon, tmp_path) as client:
        text = await refused(
            client, "transcribe_wav", filename=str(fox_wav), transcription_service_url=UNREACHABLE
        )
        assert "unreachable" in text and UNREACHABLE in text and "sona serve" in text
        for tool in ("list_transcriptions", "check_transcription_status"):
            args = {} if tool == "list_transcriptions" else {"job_id": "abc"}
            text = await refused(client, tool, transcription_service_url=UNREACHABLE, **args)
            assert "unreachable" in text
        assert "File not found" in await refused(
            client, "transcribe_wav", filename=str(tmp_path / "missing.wav")
        )
        assert "Not an audio file" in await refused(
            client, "transcribe_wav", filename=str(not_audio)
        )
        assert "empty" in await refused(client, "transcribe_wav", filename=str(empty))
        for tool in (
            "check_transcription_status",
            "wait_for_transcription",
            "cancel_transcription",
        ):
            assert "Unknown job id 'nosuchjob'" in await refused(client, tool, job_id="nosuchjob")
        assert "Unknown formats" in await refused(
            client, "check_transcription_status", job_id="nosuchjob", formats=["docx"]
        )
    assert files_in(tmp_path / "transcriptions") == []  # refused calls leave nothing


async def test_wait_reports_progress_until_completed(
    daemon: str, longer_wav: Path, tmp_path: Path
) -> None:
    calls: list[list[tuple[float, float | None, str | None]]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        calls[-1].append((progress, total, message))

    async with mcp_client(daemon, tmp_path) as client:
        job_id = (await call(client, "transcribe_wav", filename=str(longer_wav)))["job_id"]
        deadline = time.monotonic() + 200
        while True:  # a busy machine may need more than one bounded wait
            calls.append([])
            t0 = time.monotonic()
            result = await client.call_tool(
                "wait_for_transcription",
                {"job_id": job_id, "timeout_s": 55},
                progress_callback=on_progress,
            )
            # Bounded (generously: the machine may be loaded), not timed.
            assert time.monotonic() - t0 < 55 + 60, "a wait must end by its timeout_s"
            assert not result.is_error, text_of(result)
            assert isinstance(result.structured_content, dict)
            if result.structured_content["status"] == "completed":
                break
            assert time.monotonic() < deadline, result.structured_content
        assert result.structured_content["text"]
    for seen in calls:  # within one call, each notification's progress is above the last
        assert all(a[0] < b[0] for a, b in pairwise(seen)), seen
        assert all(total == 1.0 and message for _, total, message in seen), seen
    values = [p for seen in calls for p, _, _ in seen]
    assert values == sorted(values) and values[-1] == 1.0, values
    assert any(0 < v < 1 for v in values), f"progress must advance while processing: {values}"


async def test_wait_is_bounded_and_cancel_cleans_up(
    daemon: str, longer_wav: Path, tmp_path: Path
) -> None:
    async with mcp_client(daemon, tmp_path) as client:
        job_id = (await call(client, "transcribe_wav", filename=str(longer_wav)))["job_id"]
        marker = tmp_path / "transcriptions" / "longer.transcribing.txt"
        assert marker.exists()

        t0 = time.monotonic()
        waited = await call(client, "wait_for_transcription", job_id=job_id, timeout_s=1)
        assert time.monotonic() - t0 < 60  # it ended by its timeout, not the job's end
        assert waited["status"] in ("queued", "processing")
        assert "call again" in waited["message"]

        cancelled = await call(client, "cancel_transcription", job_id=job_id)
        assert cancelled["status"] == "cancelled"
        final = await call(client, "check_transcription_status", job_id=job_id)
        assert final["status"] == "cancelled" and "cancelled" in final["message"]
        assert not marker.exists()
        listed = await call(client, "list_transcriptions", status="cancelled", limit=5)
        assert job_id in [j["job_id"] for j in listed["jobs"]]


# A host's first words, then a call that must fail: raw JSON-RPC lines on stdin.
HANDSHAKE_AND_CALL = [
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "0"},
        },
    },
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "transcribe_wav", "arguments": {"filename": "missing.wav"}},
    },
]


def test_stdout_carries_only_json_rpc(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*SONA, "mcp"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        # COLUMNS: the SDK's log handler wraps lines at the terminal width,
        # which would split the message this test looks for.
        env={**os.environ, **server_env(UNREACHABLE), "COLUMNS": "1000"},
    )
    assert proc.stdin and proc.stdout and proc.stderr
    try:
        for message in HANDSHAKE_AND_CALL:
            proc.stdin.write(json.dumps(message) + "\n")
        proc.stdin.flush()
        replies = [json.loads(proc.stdout.readline()) for _ in range(2)]
        proc.stdin.close()  # EOF: the server exits
        assert proc.wait(20) == 0
        rest, err = proc.stdout.read(), proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert [r["id"] for r in replies] == [1, 2]
    assert replies[1]["result"]["isError"] is True
    assert "File not found" in replies[1]["result"]["content"][0]["text"]
    assert all(json.loads(line) for line in rest.splitlines() if line.strip())
    assert "File not found" in err  # the SDK logs refusals on stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    """``sona mcp --http PORT``: the streamable HTTP transport."""
    port = free_port()
    proc = subprocess.Popen(
        [*SONA, "mcp", "--http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
        env={**os.environ, **server_env(UNREACHABLE)},
    )
    deadline = time.monotonic() + 30
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert proc.poll() is None and time.monotonic() < deadline, "MCP HTTP server never bound"
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/mcp"
    proc.terminate()
    proc.wait(10)


async def test_streamable_http_transport(http_server: str) -> None:
    async with Client(http_server) as client:
        assert {t.name for t in (await client.list_tools()).tools} == TOOLS
        assert "unreachable" in await refused(client, "list_transcriptions")


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"RIFF\x24\x08\x00\x00WAVEfmt ", "wav"),
        (b"fLaC\x00\x00\x00\x22", "flac"),
        (b"OggS\x00\x02", "ogg"),
        (b"ID3\x04\x00\x00", "mp3"),
        (b"\xff\xfb\x90\x64", "mpeg"),
        (b"\xff\xf1\x50\x80", "mpeg"),  # AAC in ADTS
        (b"\x00\x00\x00\x20ftypM4A ", "mp4"),
        (b"\x1a\x45\xdf\xa3\x9f\x42", "webm"),
        (b"caff\x00\x01", "caf"),
        (b"FORM\x00\x00\x10\x00AIFFCOMM", "aiff"),
        (b"RIFF\x24\x08\x00\x00AVI LIST", None),
        (b"%PDF-1.7", None),
        (b"\x89PNG\r\n", None),
        (b"x", None),
    ],
)
def test_sniff_audio_by_magic_bytes(tmp_path: Path, head: bytes, kind: str | None) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(head + bytes(32))
    assert sniff_audio(path) == kind


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("fox.wav", "fox"),
        ("../../etc/passwd", "passwd"),
        ("a\\b c.mp3", "b c"),
        ('x"y.wav', "x_y"),
        ("..", None),
        (None, None),
    ],
)
def test_safe_stem_stays_inside_output_dir(name: str | None, stem: str | None) -> None:
    assert safe_stem(name) == stem


async def test_transcribe_wav_callback_url_gets_the_webhook(
    daemon: str, fox_wav: Path, tmp_path: Path
) -> None:
    """E1 through MCP: the option reaches the job; a refused URL is a tool error."""
    with Receiver([]).running() as rx:
        async with mcp_client(daemon, tmp_path) as client:
            started = await call(
                client, "transcribe_wav", filename=str(fox_wav), callback_url=rx.url
            )
            [hit] = await asyncio.to_thread(rx.wait_for, 1)
            event = json.loads(hit.body)
            assert event["type"] == "job.completed"
            assert event["data"]["job_id"] == started["job_id"]
            text = await refused(
                client,
                "transcribe_wav",
                filename=str(fox_wav),
                callback_url="http://169.254.169.254/latest",
            )
            assert "invalid_callback_url" in text and "link-local" in text
