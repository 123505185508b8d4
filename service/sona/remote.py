"""The client commands of ``sona`` (submit, list, search, status, download,
cancel, models): flags in, one daemon's HTTP API through ``sona.client``, text out.

Where output goes, for scripts: stdout carries only what was asked for (a job
id, a transcript, a table, JSON); progress, the job id during ``--wait`` and
hints go to stderr, so ``sona submit x.wav --wait > x.txt`` keeps a clean file."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from sona.formats import FORMATS, format_for_output
from sona.jobs import Status

URL_HELP = "daemon URL (default $SONA_URL or http://127.0.0.1:8765)"
FORMAT_HELP = (
    f"{'|'.join(FORMATS)} (default: from -o's extension, else text; checked before uploading)"
)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"case\": 42}'")
    return value


def output_options(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--format and -o, shared with ``sona transcribe``; ``check_output`` settles them."""
    p.add_argument("--format", help=FORMAT_HELP)
    p.add_argument("-o", "--output", type=Path, help="write the transcript here, not stdout")


def _submit_parser(sub: Any) -> None:
    s = sub.add_parser("submit", help="upload a file to the daemon as a job")
    s.add_argument("file", type=Path)
    s.add_argument("--url", help=URL_HELP)
    g = s.add_argument_group("transcription (the form fields of POST /v1/jobs)")
    g.add_argument("--model", help="model name (default: the daemon's default model)")
    g.add_argument("--language", help="ISO 639-1 code, e.g. en (default: detect)")
    g.add_argument("--task", choices=["transcribe", "translate"])
    g.add_argument("--prompt", help="text the decoder starts from (names, spelling, style)")
    g.add_argument("--hotwords", help="words to favour, space-separated")
    g.add_argument(
        "--word-timestamps", action="store_true", default=None, help="words in verbose_json"
    )
    g.add_argument(
        "--vad",
        dest="vad_filter",
        action=argparse.BooleanOptionalAction,
        help="skip silence (default on); --no-vad cuts plain 30 s windows",
    )
    g.add_argument("--diarize", choices=["none", "channels"])
    g = s.add_argument_group("the job")
    g.add_argument("--priority", type=int, help="-1000..1000; higher runs first (default 0)")
    g.add_argument("--metadata", type=_json_object, help="a JSON object kept with the job")
    g.add_argument("--callback-url", help="POSTed a signed event when the job ends")
    g.add_argument("--job-id", help="choose the job's id")
    g.add_argument("--idempotency-key", help="a retry with the same key gets the same job")
    g = s.add_argument_group("output")
    g.add_argument(
        "--wait", action="store_true", help="wait with a progress bar, then print the transcript"
    )
    g.add_argument("--timeout", type=float, default=3600, help="stop waiting after (s)")
    g.add_argument("--json", action="store_true", help="print the whole job object, not its id")
    output_options(g)


def _list_parser(sub: Any) -> None:
    p = sub.add_parser("list", help="list jobs, newest first (GET /v1/jobs)")
    p.add_argument("--status", choices=[s.value for s in Status])
    p.add_argument("--limit", type=int, default=20, help="1..200 (default 20)")
    p.add_argument("--before", metavar="JOB_ID", help="the page after this job (next_before)")
    p.add_argument("--json", action="store_true", help="the API's page object, for machines")
    p.add_argument("--url", help=URL_HELP)


def _search_parser(sub: Any) -> None:
    p = sub.add_parser("search", help="search every completed transcript (GET /v1/search)")
    p.add_argument("query", help='words (all must match), "a phrase", prefix*')
    p.add_argument("--limit", type=int, default=20, help="1..100 (default 20)")
    p.add_argument("--cursor", help="the page after this one (next_cursor)")
    p.add_argument("--job-id", help="only this job")
    p.add_argument("--language", help="only jobs in this language")
    p.add_argument("--created-after", help="only jobs created at or after (ISO 8601)")
    p.add_argument("--created-before", help="only jobs created before (ISO 8601)")
    p.add_argument(
        "--metadata", type=_json_object, help="only jobs with these metadata string values"
    )
    p.add_argument("--json", action="store_true", help="the API's page object, for machines")
    p.add_argument("--url", help=URL_HELP)


def add_parsers(sub: Any) -> None:
    _submit_parser(sub)
    _list_parser(sub)
    _search_parser(sub)
    for name, help_ in (
        ("status", "show a job (JSON)"),
        ("download", "print or save a finished transcript"),
        ("cancel", "cancel a job"),
    ):
        c = sub.add_parser(name, help=help_)
        c.add_argument("job_id")
        c.add_argument("--url", help=URL_HELP)
        if name == "download":
            output_options(c)
    ms = sub.add_parser("models", help="list, load or unload models in the daemon")
    ms.add_argument("action", choices=["list", "load", "unload"], nargs="?", default="list")
    ms.add_argument("name", nargs="?", help="model name or directory (unload: all if omitted)")
    ms.add_argument("--url", help=URL_HELP)


def check_output(args: argparse.Namespace) -> str | None:
    """Settle ``args.format`` from --format and -o before anything runs (no
    upload for a format that cannot be written); the problem, or None."""
    if not hasattr(args, "output"):
        return None
    if args.output is not None and getattr(args, "wait", True) is False:
        return "-o needs --wait (or use `sona download JOB_ID -o FILE` later)"
    try:
        args.format = format_for_output(
            None if args.output is None else str(args.output), args.format
        )
    except ValueError as exc:
        return str(exc)
    return None


async def write_output(body: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(body)
        return
    await asyncio.to_thread(output.write_text, body, encoding="utf-8")
    print(f"sona: wrote {output}", file=sys.stderr)


def _url_flag(args: argparse.Namespace) -> str:
    return f" --url {args.url}" if args.url else ""


async def _submit(client: Any, args: argparse.Namespace) -> int:
    fields = {
        name: getattr(args, name)
        for name in (
            "model", "language", "task", "prompt", "hotwords", "word_timestamps",
            "vad_filter", "diarize", "priority", "metadata", "callback_url", "job_id",
        )
    }  # fmt: skip
    job = await client.submit(args.file, idempotency_key=args.idempotency_key, **fields)
    if not args.wait:
        print(json.dumps(job, indent=2) if args.json else job["id"], flush=True)
        return 0
    job_id = job["id"]
    print(f"sona: job {job_id} {job['status']}", file=sys.stderr, flush=True)
    job = await _wait(client, args, job_id)
    if job["status"] in ("queued", "processing"):
        return _fail(
            f"stopped waiting after {args.timeout:g} s; job {job_id} goes on: "
            f"sona status {job_id}{_url_flag(args)}"
        )
    if job["status"] != "completed":
        message = (job.get("error") or {}).get("message") or ""
        return _fail(f"job {job_id} {job['status']}: {message}".rstrip(": "))
    await write_output(await client.transcript(job_id, args.format), args.output)
    return 0


async def _wait(client: Any, args: argparse.Namespace, job_id: str) -> dict[str, Any]:
    """Wait with the bar; on Ctrl-C (asyncio.run cancels us) say what became of the job."""
    from sona.progress import JobBar

    bar = JobBar()
    try:
        job: dict[str, Any] = await client.wait(
            job_id, timeout_s=args.timeout, on_progress=bar.update_from
        )
        return job
    except asyncio.CancelledError:
        bar.close()
        flag = _url_flag(args)
        print(
            f"sona: stopped waiting; job {job_id} goes on in the daemon.\n"
            f"  follow it:    sona status {job_id}{flag}\n"
            f"  fetch it:     sona download {job_id}{flag} -o FILE\n"
            f"  cancel it:    sona cancel {job_id}{flag}",
            file=sys.stderr,
            flush=True,
        )
        raise
    finally:
        bar.close()


def _fail(message: str) -> int:
    print(f"sona: {message}", file=sys.stderr)
    return 1


def job_table(jobs: list[dict[str, Any]]) -> str:
    """Jobs as aligned columns, for people (``--json`` is for machines)."""
    rows: list[tuple[str, ...]] = [("ID", "STATUS", "PROGRESS", "AUDIO", "CREATED (UTC)", "FILE")]
    rows += [_row(j) for j in jobs]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] + "\n"
        for r in rows
    )


def _row(job: dict[str, Any]) -> tuple[str, ...]:
    status = job["status"]
    if status in ("failed", "cancelled") and job.get("error"):
        progress = job["error"]["code"]
    elif job.get("queue_position") is not None and not job["progress"]:
        progress = f"#{job['queue_position']} in queue"
    else:
        progress = f"{job['progress'] * 100:.0f}%"
    audio = "" if job.get("duration") is None else f"{job['duration']:.1f} s"
    created = (job.get("created_at") or "")[:19].replace("T", " ")
    return job["id"], status, progress, audio, created, job.get("file_name") or ""


async def _list(client: Any, args: argparse.Namespace) -> int:
    page = await client.jobs(status=args.status, limit=args.limit, before=args.before)
    if args.json:
        print(json.dumps(page, indent=2))
        return 0
    if not page["data"]:
        which = f" with status {args.status}" if args.status else ""
        print(f"sona: no jobs{which}", file=sys.stderr)
        return 0
    sys.stdout.write(job_table(page["data"]))
    sys.stdout.flush()  # the table before the hint below, where both reach one terminal
    if page.get("has_more"):
        more = f"sona list --before {page['next_before']}"
        if args.status:
            more += f" --status {args.status}"
        print(f"sona: more jobs: {more}{_url_flag(args)}", file=sys.stderr)
    return 0


def hit_lines(hits: list[dict[str, Any]]) -> str:
    """One hit a line: job, segment, times, and the text with its matched
    words in [brackets], for people (``--json`` is for machines)."""
    out = []
    for h in hits:
        text, marked, at = h["text"], [], 0
        for start, end in h["marks"]:
            marked += [text[at:start], "[", text[start:end], "]"]
            at = end
        marked.append(text[at:])
        when = f"{h['start']:.2f}-{h['end']:.2f}s"
        out.append(f"{h['job_id']}  #{h['segment']}  {when}  {''.join(marked).strip()}\n")
    return "".join(out)


async def _search(client: Any, args: argparse.Namespace) -> int:
    page = await client.search(
        args.query,
        limit=args.limit,
        cursor=args.cursor,
        job_id=args.job_id,
        language=args.language,
        created_after=args.created_after,
        created_before=args.created_before,
        metadata={k: str(v) for k, v in (args.metadata or {}).items()},
    )
    if args.json:
        print(json.dumps(page, indent=2))
        return 0
    if not page["data"]:
        print("sona: no matches", file=sys.stderr)
        return 0
    sys.stdout.write(hit_lines(page["data"]))
    sys.stdout.flush()
    if page.get("has_more"):
        more = f"sona search {json.dumps(args.query)} --cursor {page['next_cursor']}"
        print(f"sona: more hits: {more}{_url_flag(args)}", file=sys.stderr)
    return 0


async def _status(client: Any, args: argparse.Namespace) -> int:
    print(json.dumps(await client.job(args.job_id), indent=2))
    return 0


async def _download(client: Any, args: argparse.Namespace) -> int:
    await write_output(await client.transcript(args.job_id, args.format), args.output)
    return 0


async def _cancel(client: Any, args: argparse.Namespace) -> int:
    print(json.dumps(await client.cancel(args.job_id), indent=2))
    return 0


async def _models(client: Any, args: argparse.Namespace) -> int:
    if args.action == "load":
        if not args.name:
            print("sona: usage: sona models load NAME_OR_PATH", file=sys.stderr)
            return 2
        result = await client.load_model(args.name)
    elif args.action == "unload":
        result = await client.unload_model(args.name)
    else:
        result = await client.models()
    print(json.dumps(result, indent=2))
    return 0


ACTIONS: dict[str, Callable[[Any, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "submit": _submit,
    "list": _list,
    "search": _search,
    "status": _status,
    "download": _download,
    "cancel": _cancel,
    "models": _models,
}


def run(args: argparse.Namespace) -> int:
    from sona.client import SonaClient, SonaClientError

    async def go() -> int:
        async with SonaClient(args.url) as client:
            return await ACTIONS[args.command](client, args)

    try:
        return asyncio.run(go())
    except SonaClientError as exc:
        return _fail(str(exc))
