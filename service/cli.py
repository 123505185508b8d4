"""The ``sona`` command: parse, configure, run.

Server-side commands (serve, transcribe, config) build the one Settings model
from flags > SONA_* environment > config file; client commands talk to a
running daemon at --url / SONA_URL (default http://127.0.0.1:8765)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from service import __version__
from service.errors import DataDirInUse
from service.settings import Settings

# argparse dest → Settings field, for flags that override configuration.
SERVE_FLAGS = {
    "host": "host",
    "port": "port",
    "socket": "socket",
    "data_dir": "data_dir",
    "model": "model",
    "default_model": "default_model",
    "store": "store",
    "device": "device",
    "compute_type": "compute_type",
    "insecure": "insecure",
    "pidfile": "pidfile",
    "log_level": "log_level",
    "max_upload_mb": "max_upload_mb",
    "drain_timeout_s": "drain_timeout_s",
    "allow_download": "allow_download",
}


def _serve_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the daemon")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="TCP port; 0 picks a free one (default 8765)")
    p.add_argument("--socket", type=Path, help="serve on this unix socket instead (mode 0600)")
    p.add_argument("--data-dir", type=Path, help="where the database and uploads live")
    p.add_argument("--model", help="model to load at start (default: start empty)")
    p.add_argument("--default-model", help="model for jobs that name none (default tiny.en)")
    p.add_argument("--store", help="store URL (default sqlite:<data-dir>/sona.db)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--compute-type")
    p.add_argument("--pidfile", type=Path)
    p.add_argument("--log-level")
    p.add_argument("--max-upload-mb", type=float)
    p.add_argument("--drain-timeout-s", type=float)
    p.add_argument("--allow-download", action="store_true", default=None)
    p.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="allow a non-loopback bind without an API key",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sona", description="Sona transcription daemon")
    parser.add_argument("--version", action="version", version=f"sona {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)

    t = sub.add_parser("transcribe", help="transcribe one file locally, no daemon")
    t.add_argument("file", type=Path)
    t.add_argument("--format", default="text", help="text|json|verbose_json|srt|vtt|tsv|jsonl")
    t.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    t.add_argument("--model", help="model name or CTranslate2 directory (default tiny.en)")
    t.add_argument("--language")
    t.add_argument("--word-timestamps", action="store_true")
    t.add_argument("--diarize", choices=["none", "channels"], default="none")

    for name, help_ in (
        ("submit", "upload a file to the daemon"),
        ("status", "show a job"),
        ("download", "print a finished transcript"),
        ("cancel", "cancel a job"),
    ):
        c = sub.add_parser(name, help=help_)
        c.add_argument("file" if name == "submit" else "job_id")
        c.add_argument("--url", help="daemon URL (default $SONA_URL or http://127.0.0.1:8765)")
        if name == "submit":
            c.add_argument("--model")
            c.add_argument("--language")
            c.add_argument("--wait", action="store_true", help="wait and print the transcript")
            c.add_argument("--timeout", type=float, default=3600)
        if name in ("submit", "download"):
            c.add_argument("--format", default="text")

    ms = sub.add_parser("models", help="list, load or unload models in the daemon")
    ms.add_argument("action", choices=["list", "load", "unload"], nargs="?", default="list")
    ms.add_argument("name", nargs="?", help="model name or directory (unload: all if omitted)")
    ms.add_argument("--url", help="daemon URL (default $SONA_URL or http://127.0.0.1:8765)")

    m = sub.add_parser("mcp", help="run the MCP tool server (stdio)")
    m.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP instead")
    sub.add_parser("config", help="print the effective configuration (secrets masked)")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    overrides = {
        field: getattr(args, dest)
        for dest, field in SERVE_FLAGS.items()
        if getattr(args, dest, None) is not None
    }
    return Settings(**overrides)


def _fail(message: str, code: int = 2) -> int:
    print(f"sona: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "serve": _cmd_serve,
        "transcribe": _cmd_transcribe,
        "config": _cmd_config,
        "mcp": _cmd_mcp,
        "submit": _client_cmd,
        "status": _client_cmd,
        "download": _client_cmd,
        "cancel": _client_cmd,
        "models": _client_cmd,
    }
    try:
        return handlers[args.command](args)
    except ValidationError as exc:
        err = exc.errors()[0]
        return _fail(f"invalid setting {'.'.join(map(str, err['loc']))}: {err['msg']}")
    except KeyboardInterrupt:
        return 130


def _cmd_serve(args: argparse.Namespace) -> int:
    from service.app import serve
    from service.logs import configure

    settings = settings_from(args)
    configure(settings.log_level)
    if not settings.on_loopback and not settings.all_api_keys() and not settings.insecure:
        return _fail(
            f"refusing to listen on {settings.host} without an API key: set SONA_API_KEYS "
            "(or --insecure to accept the risk)"
        )
    try:
        return asyncio.run(serve(settings))
    except DataDirInUse as exc:  # a second daemon on one data dir: say so, plainly
        return _fail(exc.message, 1)


def _cmd_config(args: argparse.Namespace) -> int:
    print(json.dumps(Settings().masked(), indent=2))
    return 0


def _cmd_mcp(args: argparse.Namespace) -> int:
    from mcp_tools.server import run

    run(http_port=args.http)
    return 0


def _cmd_transcribe(args: argparse.Namespace) -> int:
    from service.local import transcribe_local

    if not args.file.is_file():
        return _fail(f"no such file: {args.file}")
    return transcribe_local(args, Settings())


def _client_cmd(args: argparse.Namespace) -> int:
    from service.client import SonaClient, SonaClientError

    async def go() -> int:
        async with SonaClient(args.url) as client:
            return await _CLIENT_ACTIONS[args.command](client, args)

    try:
        return asyncio.run(go())
    except SonaClientError as exc:
        return _fail(str(exc), 1)


async def _submit(client: Any, args: argparse.Namespace) -> int:
    opts = {k: v for k, v in (("model", args.model), ("language", args.language)) if v}
    job = await client.submit(Path(args.file), **opts)
    if not args.wait:
        print(json.dumps(job, indent=2))
        return 0
    job = await client.wait(job["id"], timeout_s=args.timeout, on_progress=_progress_line)
    print(file=sys.stderr)
    if job["status"] != "completed":
        return _fail(
            f"job {job['id']} {job['status']}: {(job.get('error') or {}).get('message')}", 1
        )
    print(await client.transcript(job["id"], args.format), end="")
    return 0


def _progress_line(job: dict[str, Any]) -> None:
    print(
        f"\r{job['status']:<10} {job['progress'] * 100:5.1f}%", end="", file=sys.stderr, flush=True
    )


async def _status(client: Any, args: argparse.Namespace) -> int:
    print(json.dumps(await client.job(args.job_id), indent=2))
    return 0


async def _download(client: Any, args: argparse.Namespace) -> int:
    print(await client.transcript(args.job_id, args.format), end="")
    return 0


async def _cancel(client: Any, args: argparse.Namespace) -> int:
    print(json.dumps(await client.cancel(args.job_id), indent=2))
    return 0


async def _models(client: Any, args: argparse.Namespace) -> int:
    if args.action == "load":
        if not args.name:
            return _fail("usage: sona models load NAME_OR_PATH")
        result = await client.load_model(args.name)
    elif args.action == "unload":
        result = await client.unload_model(args.name)
    else:
        result = await client.models()
    print(json.dumps(result, indent=2))
    return 0


_CLIENT_ACTIONS: dict[str, Callable[[Any, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "submit": _submit,
    "status": _status,
    "download": _download,
    "cancel": _cancel,
    "models": _models,
}
