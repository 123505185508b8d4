"""Sona's MCP tools (D1–D4): let an agent transcribe audio through a running
daemon without ever blocking longer than its host allows.

The tools talk to the daemon over HTTP only, through ``sona.client``. Every
anticipated failure becomes the SDK's ``ToolError``, whose message reaches the
agent as the tool result; stdout carries nothing but JSON-RPC (the SDK logs to
stderr)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from sona.client import ApiError, ServiceUnreachable, SonaClient, SonaClientError
from sona.wire import FINISHED, STATUSES
from sona_mcp.files import (
    STATUS_SUFFIX,
    check_audio,
    find_status_file,
    local_path,
    now_iso,
    read_status_file,
    safe_stem,
    write_files,
    write_status_file,
)

# Hosts often cut a tool call at 60 s; waiting stops short of that.
MAX_WAIT_S = 55.0
REQUEST_TIMEOUT_S = 30.0
# Extra transcript files check_transcription_status can write, by format name.
EXTRA_FORMATS = {"srt": ".srt", "vtt": ".vtt", "tsv": ".tsv", "json": ".json"}

ServiceUrl = Annotated[
    str | None,
    Field(description="Sona service URL; default $SONA_URL, else http://127.0.0.1:8765"),
]
JobId = Annotated[str, Field(description="the job_id that transcribe_wav returned")]
OutputDir = Annotated[
    str,
    Field(description="folder for the status file and transcripts (relative to the server's cwd)"),
]

INSTRUCTIONS = """\
Transcribe audio with a local Sona service. transcribe_wav uploads a file and returns a
job_id at once; then call wait_for_transcription (waits up to timeout_s) or
check_transcription_status (never waits). When the job is completed,
check_transcription_status saves <name>.txt in output_dir and returns the text.
search_transcripts finds what was said across every completed transcript, with times."""


# --- talking to the daemon ---


@asynccontextmanager
async def service(url: str | None, job_id: str | None = None) -> AsyncIterator[SonaClient]:
    """A client whose errors come out as ToolErrors an agent can act on."""
    async with SonaClient(url, timeout=REQUEST_TIMEOUT_S) as client:
        try:
            yield client
        except ServiceUnreachable as exc:
            raise ToolError(
                f"{exc.message}. Pass transcription_service_url if it runs elsewhere."
            ) from exc
        except ApiError as exc:
            raise ToolError(api_message(exc, client.base_url, job_id)) from exc
        except SonaClientError as exc:
            raise ToolError(exc.message) from exc


def api_message(exc: ApiError, url: str, job_id: str | None) -> str:
    if exc.status == 404 and job_id is not None:
        return (
            f"Unknown job id {job_id!r} at {url}. list_transcriptions shows the jobs this "
            "service knows."
        )
    hint = f" Retry in {exc.retry_after:g} s." if exc.retry_after else ""
    return f"Sona service refused ({exc.status} {exc.code}): {exc.message}.{hint}"


def job_summary(job: dict[str, Any]) -> dict[str, Any]:
    keys = ("status", "progress", "duration", "processed_seconds", "language", "model")
    out: dict[str, Any] = {"job_id": job["id"], **{k: job.get(k) for k in keys}}
    if job.get("error"):
        out["error"] = job["error"]
    return out


def describe(job: dict[str, Any]) -> str:
    status, pct = job["status"], 100 * float(job.get("progress") or 0)
    if status == "queued":
        return "Queued, waiting for the worker."
    if status == "processing":
        done, total = job.get("processed_seconds") or 0, job.get("duration")
        of = f" ({done:.0f} of {total:.0f} s of audio)" if total else ""
        return f"Processing: {pct:.0f}% done{of}."
    if status == "completed":
        return "Completed."
    err = job.get("error") or {}
    why = f" {err.get('code')}: {err.get('message')}" if err else ""
    return f"Transcription {status}.{why}"


# --- the tools ---


async def transcribe_wav(
    filename: Annotated[str, Field(description="path of the audio file to transcribe")],
    output_dir: OutputDir = "./transcriptions",
    model: Annotated[str | None, Field(description="model name; default: the service's")] = None,
    transcription_service_url: ServiceUrl = None,
    callback_url: Annotated[
        str | None,
        Field(
            description="http(s) URL the service POSTs a signed JSON event to when the job "
            "completes, fails or is cancelled (Standard Webhooks)"
        ),
    ] = None,
) -> dict[str, Any]:
    """Start transcribing an audio file (WAV, FLAC, MP3, M4A, Ogg, WebM, ...) and return
    at once with a job_id. Writes <output_dir>/<name>.transcribing.txt as a marker.
    Follow up with wait_for_transcription or check_transcription_status."""
    path = local_path(filename)
    await asyncio.to_thread(check_audio, path)
    status_file = local_path(output_dir) / f"{safe_stem(path.name)}{STATUS_SUFFIX}"
    async with service(transcription_service_url) as client:
        url = client.base_url
        marker: dict[str, Any] = {"status": "uploading", "job_id": ""}
        marker.update(service_url=url, source_file=path, submitted_at=now_iso())
        # Written before the upload: an unwritable output_dir fails before any work.
        await asyncio.to_thread(write_status_file, status_file, marker)
        try:
            job = await client.submit(path, model=model, callback_url=callback_url)
        except SonaClientError:
            await asyncio.to_thread(write_files, {}, status_file)
            raise
    marker.update(status=job["status"], job_id=job["id"])
    await asyncio.to_thread(write_status_file, status_file, marker)
    return {
        "job_id": job["id"],
        "status": job["status"],
        "service_url": url,
        "status_file": str(status_file),
        "message": (
            f"Transcription of {path.name} queued as job {job['id']}. Call "
            "wait_for_transcription or check_transcription_status with this job_id "
            "(and the same output_dir) to get the transcript."
        ),
    }


async def check_transcription_status(
    job_id: JobId,
    output_dir: OutputDir = "./transcriptions",
    transcription_service_url: ServiceUrl = None,
    formats: Annotated[
        list[str] | None,
        Field(description=f"extra transcript files to save: any of {sorted(EXTRA_FORMATS)}"),
    ] = None,
) -> dict[str, Any]:
    """Check a transcription job without waiting. When completed, saves the transcript
    as <output_dir>/<name>.txt (plus .srt/.vtt/... when asked in formats), removes the
    .transcribing.txt marker and returns the text; otherwise returns status and progress."""
    unknown = sorted(set(formats or ()) - set(EXTRA_FORMATS))
    if unknown:
        raise ToolError(f"Unknown formats {unknown}; choose from {sorted(EXTRA_FORMATS)}.")
    out_dir = local_path(output_dir)
    async with service(transcription_service_url, job_id) as client:
        job = await client.job(job_id)
        status_file = await asyncio.to_thread(find_status_file, out_dir, job_id)
        if job["status"] == "completed":
            return await save_transcript(client, job, out_dir, status_file, formats or [])
    result = {**job_summary(job), "message": describe(job)}
    if job["status"] in FINISHED:  # and not completed: nothing to save
        if status_file is not None:
            await asyncio.to_thread(write_files, {}, status_file)
        return result
    result["partial_text"] = job.get("text") or ""
    result["message"] += " Call again later, or wait_for_transcription."
    if status_file is not None:
        marker = await asyncio.to_thread(read_status_file, status_file)
        marker.update(status=job["status"], progress=f"{job.get('progress') or 0:.3f}")
        marker["updated_at"] = now_iso()
        await asyncio.to_thread(write_status_file, status_file, marker)
    return result


async def save_transcript(
    client: SonaClient,
    job: dict[str, Any],
    out_dir: Path,
    status_file: Path | None,
    formats: list[str],
) -> dict[str, Any]:
    stem = (
        (status_file and safe_stem(status_file.name.removesuffix(STATUS_SUFFIX)))
        or safe_stem(job.get("file_name"))
        or safe_stem(job["id"])
        or "transcript"
    )
    text = await client.transcript(job["id"], "text")
    files = {out_dir / f"{stem}.txt": text}
    for fmt in dict.fromkeys(formats):
        files[out_dir / f"{stem}{EXTRA_FORMATS[fmt]}"] = await client.transcript(job["id"], fmt)
    await asyncio.to_thread(write_files, files, status_file)
    paths = [str(p) for p in files]
    return {
        **job_summary(job),
        "transcript_file": paths[0],
        "files": paths,
        "transcript": text,
        "message": f"Completed; transcript saved to {paths[0]}.",
    }


async def wait_for_transcription(
    job_id: JobId,
    ctx: Context,
    timeout_s: Annotated[
        float, Field(description=f"longest wait in seconds (at most {MAX_WAIT_S:g})")
    ] = 45,
    transcription_service_url: ServiceUrl = None,
) -> dict[str, Any]:
    """Wait up to timeout_s for a job to finish, reporting MCP progress as it goes;
    returns the final or current status. Then use check_transcription_status to save
    the transcript."""
    timeout = min(max(timeout_s, 0.0), MAX_WAIT_S)
    sent: list[float] = []

    async def report(job: dict[str, Any]) -> None:
        progress = float(job.get("progress") or 0)
        # MCP wants each notification's progress above the last one's.
        if not sent or progress > sent[-1]:
            sent.append(progress)
            await ctx.report_progress(progress, 1.0, describe(job))

    async with service(transcription_service_url, job_id) as client:
        job = await client.wait(job_id, timeout, on_progress=report, poll_s=0.25)
    result = {**job_summary(job), "message": describe(job)}
    if job["status"] == "completed":
        result["message"] += " Call check_transcription_status to save the transcript."
        result["text"] = job.get("text") or ""
    elif job["status"] in ("queued", "processing"):
        result["message"] += f" Still running after {timeout:g} s; call again to keep waiting."
        result["partial_text"] = job.get("text") or ""
    return result


async def cancel_transcription(
    job_id: JobId, transcription_service_url: ServiceUrl = None
) -> dict[str, Any]:
    """Cancel a queued or running transcription job."""
    async with service(transcription_service_url, job_id) as client:
        try:
            job = await client.cancel(job_id)
        except ApiError as exc:
            if exc.status != 409:
                raise
            job = await client.job(job_id)
            raise ToolError(
                f"Job {job_id} is already {job['status']}; there is nothing to cancel."
            ) from exc
    return {**job_summary(job), "message": describe(job)}


async def list_transcriptions(
    status: Annotated[
        str | None,
        Field(description=f"only jobs in this status: {'|'.join(STATUSES)}"),
    ] = None,
    limit: Annotated[int, Field(ge=1, le=200, description="how many, newest first")] = 20,
    transcription_service_url: ServiceUrl = None,
) -> dict[str, Any]:
    """List recent transcription jobs, newest first."""
    async with service(transcription_service_url) as client:
        page = await client.jobs(status=status, limit=limit)
    jobs = [
        {**job_summary(j), "file_name": j.get("file_name"), "created_at": j.get("created_at")}
        for j in page["data"]
    ]
    return {"jobs": jobs, "has_more": page.get("has_more", False)}


async def search_transcripts(
    query: Annotated[
        str,
        Field(
            description='words a segment must all hold; "a phrase" in quotes; word* for '
            "any word starting so"
        ),
    ],
    limit: Annotated[int, Field(ge=1, le=100, description="how many hits, best first")] = 10,
    job_id: Annotated[str | None, Field(description="only this job")] = None,
    language: Annotated[str | None, Field(description="only jobs in this language")] = None,
    created_after: Annotated[
        str | None, Field(description="only jobs created at or after (ISO 8601)")
    ] = None,
    created_before: Annotated[
        str | None, Field(description="only jobs created before (ISO 8601)")
    ] = None,
    metadata: Annotated[
        dict[str, str] | None, Field(description="only jobs whose metadata has these values")
    ] = None,
    cursor: Annotated[str | None, Field(description="next_cursor of a previous call")] = None,
    transcription_service_url: ServiceUrl = None,
) -> dict[str, Any]:
    """Search every completed transcript for what was said. Each hit is one
    segment: job_id, start/end in seconds, its text and file name, to cite."""
    async with service(transcription_service_url) as client:
        page = await client.search(
            query,
            limit=limit,
            cursor=cursor,
            job_id=job_id,
            language=language,
            created_after=created_after,
            created_before=created_before,
            metadata=metadata,
        )
    keys = ("job_id", "segment", "start", "end", "text", "file_name", "created_at", "metadata")
    hits = [{k: h.get(k) for k in keys} for h in page["data"]]
    return {"hits": hits, "has_more": page["has_more"], "next_cursor": page["next_cursor"]}


TOOLS = (
    transcribe_wav,
    check_transcription_status,
    wait_for_transcription,
    cancel_transcription,
    list_transcriptions,
    search_transcripts,
)


def create_server() -> MCPServer:
    try:
        version = metadata.version("sona")
    except metadata.PackageNotFoundError:  # running from a source tree
        version = ""
    server: MCPServer = MCPServer("sona", version=version, instructions=INSTRUCTIONS)
    for tool in TOOLS:
        server.add_tool(tool)
    return server


def run(http_port: int | None = None) -> None:
    """Serve the tools over stdio, or over streamable HTTP on 127.0.0.1:``http_port``."""
    server = create_server()  # sets up logging (stderr, INFO)
    # httpx logs every poll at INFO: a flood in the host's MCP log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if http_port is None:
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=http_port)
