"""HTTP composition: ``create_app`` puts the routes and middlewares on the
runtime (``service/runtime.py``, which owns everything else); ``serve`` binds,
prints the ready line and runs until SIGTERM/SIGINT (B2–B5)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from sona import loop_errors
from sona.api import realtime, routes
from sona.api.bodies import body_timeout_middleware
from sona.api.connections import connection_middleware, handler_options, listen
from sona.api.errors import error_middleware
from sona.api.limits import LIMITS, Limits, rate_limit_middleware
from sona.api.middleware import (
    access_middleware,
    add_request_id,
    end_json_with_newline,
    guard_middleware,
)
from sona.errors import SonaError, StartupFailed
from sona.keys import (
    API_KEYS,
    ENGINE,
    EVENTS,
    INTAKE,
    LIVE,
    METRICS,
    MODELS,
    NOTIFIER,
    RUNTIME,
    SETTINGS,
    STORE,
    UPLOADS,
    WORKER,
    LiveSessions,
)
from sona.metrics import Metrics
from sona.runtime import start_runtime
from sona.settings import Settings
from sona.signals import stop_on_signals
from sona.startup import bind_tcp, check_data_dir

log = structlog.get_logger("sona")


def create_app(settings: Settings) -> web.Application:
    settings = settings.model_copy(update={"data_dir": settings.data_dir.resolve()})
    app = web.Application(
        middlewares=[
            connection_middleware,  # outermost: it must see every request end
            access_middleware,
            error_middleware,
            body_timeout_middleware,  # inside the error table: a stalled body is 408
            guard_middleware,
            rate_limit_middleware,
        ],
        client_max_size=1024 * 1024,  # JSON bodies; uploads stream past this limit
    )
    app[SETTINGS] = settings
    app[API_KEYS] = settings.all_api_keys()
    app[METRICS] = Metrics()
    app[LIMITS] = Limits.from_settings(settings)
    app.on_response_prepare.append(add_request_id)
    app.on_response_prepare.append(end_json_with_newline)
    app.cleanup_ctx.append(_runtime_ctx)
    app[LIVE] = LiveSessions()
    # Live sessions first: their last turns need the engine the drain stops.
    app.on_shutdown.append(realtime.close_all)
    app.on_shutdown.append(_drain)
    routes.setup(app)
    return app


async def _runtime_ctx(app: web.Application) -> AsyncIterator[None]:
    async with start_runtime(app[SETTINGS], app[METRICS]) as rt:
        app[RUNTIME] = rt
        app[STORE], app[UPLOADS], app[EVENTS] = rt.store, rt.uploads, rt.events
        app[NOTIFIER] = rt.notifier
        app[MODELS], app[INTAKE] = rt.models, rt.intake
        app[WORKER] = rt.worker
        app[ENGINE] = rt.engine
        yield


async def _drain(app: web.Application) -> None:
    """on_shutdown: the listener is already closed; let the running jobs finish."""
    await app[RUNTIME].drain()


def ready_line(listener: asyncio.Server, settings: Settings) -> dict[str, object]:
    if settings.socket is not None:
        return {"status": "ready", "socket": str(settings.socket)}
    port = listener.sockets[0].getsockname()[1]
    return {"status": "ready", "port": port}


async def serve(settings: Settings) -> int:
    """Run the daemon until a signal; returns the exit code. Raises
    ``StartupFailed`` (the CLI prints the error line) when it cannot serve."""
    loop_errors.install(asyncio.get_running_loop())
    # Off the loop: a slow disk or a DNS lookup of --host must not stall it.
    await asyncio.to_thread(check_data_dir, settings.data_dir)
    sock = None
    if settings.socket is None:
        sock = await asyncio.to_thread(bind_tcp, settings.host, settings.port)
    app = create_app(settings)
    runner = web.AppRunner(
        app, handle_signals=False, shutdown_timeout=5, **handler_options(settings)
    )
    try:
        await runner.setup()  # the runtime: store, engine, the --model load
    except Exception as exc:  # a bad model, a corrupt database: still one error line
        if sock is not None:
            sock.close()
        await runner.cleanup()
        if isinstance(exc, SonaError):
            raise StartupFailed(exc.code, exc.message) from exc
        raise StartupFailed("startup_failed", f"{type(exc).__name__}: {exc}") from exc
    try:
        listener = await listen(runner, settings, sock)
    except OSError as exc:
        await runner.cleanup()
        raise StartupFailed("bind_failed", f"cannot listen on {settings.socket}: {exc}") from exc
    if settings.pidfile:
        settings.pidfile.write_text(f"{os.getpid()}\n")
    stop = stop_on_signals("server")
    print(json.dumps(ready_line(listener, settings), separators=(",", ":")), flush=True)
    log.info("server.ready", **ready_line(listener, settings))
    await stop.wait()
    listener.close()  # stop accepting; the runner then drains and closes connections
    await runner.cleanup()
    if settings.pidfile:
        settings.pidfile.unlink(missing_ok=True)
    if settings.socket is not None:
        settings.socket.unlink(missing_ok=True)
    log.info("server.stopped")
    sys.stdout.flush()
    return 0
