"""The ``sona`` command: parse, configure, run.

Server-side commands (serve, transcribe, config) build the one Settings model
from flags > SONA_* environment > config file; client commands talk to a
running daemon at --url / SONA_URL (default http://127.0.0.1:8765); they live
in ``sona.remote``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError
from pydantic_settings import SettingsError

from sona import __version__
from sona.errors import ConfigError, DataDirInUse, SonaError, StartupFailed
from sona.logs import configure as configure_logs
from sona.remote import ACTIONS as CLIENT_ACTIONS
from sona.remote import add_parsers as add_client_parsers
from sona.remote import check_output, output_options
from sona.remote import run as run_client
from sona.settings import Settings, check_environment, unparsable

# argparse dest → Settings field, for flags that override configuration.
COMMON_FLAGS = (
    "data_dir",
    "store",
    "model_dir",
    "device",
    "compute_type",
    "allow_download",
    "log_level",
    "log_format",
)
SERVE_FLAGS = (
    *COMMON_FLAGS,
    "host",
    "port",
    "socket",
    "model",
    "default_model",
    "insecure",
    "pidfile",
    "max_upload_mb",
    "drain_timeout_s",
    "worker",
)
# A worker node's --host/--port are its probe's, not the API's.
WORKER_FLAGS = (*COMMON_FLAGS, "model", "default_model", "pidfile", "drain_timeout_s")


def _common_options(p: argparse.ArgumentParser) -> None:
    """Flags for every command that builds the daemon's configuration."""
    g = p.add_argument_group("configuration (flags > SONA_* environment > config file)")
    g.add_argument("--config", type=Path, help="TOML config file (default $SONA_CONFIG_FILE)")
    g.add_argument("--data-dir", type=Path, help="where the database and uploads live")
    g.add_argument("--store", help="store URL (default sqlite:<data-dir>/sona.db)")
    g.add_argument("--model-dir", type=Path, help="local model cache (default <data-dir>/models)")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"])
    g.add_argument("--compute-type", help="int8, float16, … (default auto)")
    g.add_argument("--allow-download", action="store_true", default=None)
    g.add_argument("--log-level", help="debug, info, warning, error")
    g.add_argument(
        "--log-format",
        choices=["json", "console", "auto"],
        help="log lines on stderr (default auto: console on a terminal, JSON otherwise)",
    )


def _serve_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the daemon")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="TCP port; 0 picks a free one (default 8765)")
    p.add_argument("--socket", type=Path, help="serve on this unix socket instead (mode 0600)")
    p.add_argument("--model", help="model to load at start (default: start empty)")
    p.add_argument("--default-model", help="model for jobs that name none (default tiny.en)")
    p.add_argument("--pidfile", type=Path)
    p.add_argument("--max-upload-mb", type=float)
    p.add_argument("--drain-timeout-s", type=float)
    p.add_argument(
        "--no-worker",
        dest="worker",
        action="store_false",
        default=None,
        help="an API node: no engine, no worker; workers elsewhere share the store",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="allow a non-loopback bind without an API key",
    )
    _common_options(p)


def _worker_parser(sub: Any) -> None:
    p = sub.add_parser(
        "worker", help="run a worker node: no API; jobs from a shared store (docs/scaling.md)"
    )
    p.add_argument("--host", default="127.0.0.1", help="probe bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="serve GET /health and /metrics here (default: none)")
    p.add_argument("--model", help="model to load at start (default: start empty)")
    p.add_argument("--default-model", help="model for jobs that name none (default tiny.en)")
    p.add_argument("--pidfile", type=Path)
    p.add_argument("--drain-timeout-s", type=float)
    _common_options(p)


def _transcribe_parser(sub: Any) -> None:
    t = sub.add_parser("transcribe", help="transcribe one file locally, no daemon")
    t.add_argument("file", type=Path)
    output_options(t)
    t.add_argument("--model", help="model name or CTranslate2 directory (default tiny.en)")
    t.add_argument("--language")
    t.add_argument("--word-timestamps", action="store_true")
    t.add_argument("--diarize", choices=["none", "channels"], default="none")
    _common_options(t)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sona", description="Sona transcription daemon")
    parser.add_argument("--version", action="version", version=f"sona {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _worker_parser(sub)
    _transcribe_parser(sub)
    add_client_parsers(sub)
    m = sub.add_parser("mcp", help="run the MCP tool server (stdio)")
    m.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP instead")
    c = sub.add_parser("config", help="print the resolved configuration (secrets masked)")
    _common_options(c)
    return parser


def settings_from(args: argparse.Namespace, **defaults: Any) -> Settings:
    """Flags > SONA_* environment > config file. ``defaults`` apply only where
    neither a flag nor the environment nor the file says otherwise."""
    if getattr(args, "config", None) is not None:
        os.environ["SONA_CONFIG_FILE"] = str(args.config)
    check_environment()
    flags = {"serve": SERVE_FLAGS, "worker": WORKER_FLAGS}.get(args.command, COMMON_FLAGS)
    overrides = {f: getattr(args, f) for f in flags if getattr(args, f, None) is not None}
    try:
        settings = Settings(**overrides)
    except SettingsError as exc:
        raise unparsable(exc) from None
    unset = {k: v for k, v in defaults.items() if k not in settings.model_fields_set}
    return settings.model_copy(update=unset) if unset else settings


def _fail(message: str, code: int = 2) -> int:
    print(f"sona: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Every failure is one ``sona: …`` line on stderr and an exit code:
    2 for usage and configuration, 1 for everything else."""
    args = build_parser().parse_args(argv)
    if problem := check_output(args):
        return _fail(problem)  # before any upload or model load
    if args.command != "mcp":  # the MCP SDK sets up its own logging on stderr
        # Until the settings are known (they may fail): stderr, never stdout.
        configure_logs(
            getattr(args, "log_level", None) or "info",
            fmt=getattr(args, "log_format", None) or "auto",
        )
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "serve": _cmd_serve,
        "worker": _cmd_worker,
        "transcribe": _cmd_transcribe,
        "config": _cmd_config,
        "mcp": _cmd_mcp,
        **dict.fromkeys(CLIENT_ACTIONS, run_client),
    }
    try:
        return handlers[args.command](args)
    except ValidationError as exc:
        return _fail(_validation_message(exc))
    except ConfigError as exc:
        return _fail(exc.message)
    except SonaError as exc:
        return _fail(f"{exc.code}: {exc.message}", 1)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `sona models | head`: the reader left. Point stdout at /dev/null so
        # the interpreter's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:
        return _fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), 1)
    except Exception as exc:  # a bug: still one line (the traceback: --log-level debug)
        structlog.get_logger("sona").debug("cli.crashed", exc_info=True)
        return _fail(f"internal error: {type(exc).__name__}: {exc}", 1)


def _validation_message(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"invalid setting {'.'.join(map(str, err['loc']))}: {err['msg']}"


def _cmd_serve(args: argparse.Namespace) -> int:
    from sona.app import serve

    try:
        settings = settings_from(args)
    except ValidationError as exc:
        return _startup_error("bad_config", _validation_message(exc), 2)
    except ConfigError as exc:
        return _startup_error(exc.code, exc.message, 2)
    configure_logs(settings.log_level, fmt=settings.log_format)
    if not settings.on_loopback and not settings.all_api_keys() and not settings.insecure:
        return _startup_error(
            "insecure_bind",
            f"refusing to listen on {settings.host} without an API key: set SONA_API_KEYS "
            "(or --insecure to accept the risk)",
            2,
        )

    try:
        return asyncio.run(serve(settings))
    except (StartupFailed, DataDirInUse) as exc:
        return _startup_error(exc.code, exc.message, 1)


def _cmd_worker(args: argparse.Namespace) -> int:
    from sona.node import run_worker_node

    try:
        settings = settings_from(args).model_copy(update={"worker": True, "host": args.host})
    except ValidationError as exc:
        return _startup_error("bad_config", _validation_message(exc), 2)
    except ConfigError as exc:
        return _startup_error(exc.code, exc.message, 2)
    configure_logs(settings.log_level, fmt=settings.log_format)

    try:
        return asyncio.run(run_worker_node(settings, probe_port=args.port))
    except (StartupFailed, DataDirInUse) as exc:
        return _startup_error(exc.code, exc.message, 1)


def _startup_error(code: str, message: str, exit_code: int) -> int:
    """The sidecar contract's other half: one compact JSON line on stdout, where
    a parent waits for the ready line, and one log line saying the same."""
    line = {"status": "error", "error": {"code": code, "message": message}}
    print(json.dumps(line, separators=(",", ":")), flush=True)
    structlog.get_logger("sona").error("server.start_failed", code=code, message=message)
    return exit_code


def _cmd_config(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    print(json.dumps(settings.resolved(), indent=2))
    return 0


def _cmd_mcp(args: argparse.Namespace) -> int:
    from sona_mcp.server import run

    run(http_port=args.http)
    return 0


def _cmd_transcribe(args: argparse.Namespace) -> int:
    from sona.local import transcribe_local

    if not args.file.is_file():
        return _fail(f"no such file: {args.file}")
    # Quiet unless asked: the progress bar is what a person watches here.
    settings = settings_from(args, log_level="warning")
    configure_logs(settings.log_level, fmt=settings.log_format)
    return transcribe_local(args, settings)
