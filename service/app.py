"""Composition root: the only place that names concrete classes.

``create_app`` wires settings, store, engine, worker and routes; ``serve``
binds, prints the ready line and runs until SIGTERM/SIGINT (B2–B5)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import structlog
from aiohttp import web

from service.api import routes
from service.api.errors import error_middleware
from service.api.middleware import guard_middleware, request_id_middleware
from service.engine import Engine
from service.engine.registry import ModelRegistry
from service.events import EventHub
from service.intake import Intake, IntakeConfig
from service.keys import API_KEYS, EVENTS, INTAKE, MODELS, SETTINGS, STORE, UPLOADS, WORKER
from service.pipeline import Limits
from service.settings import Settings
from service.store import open_store
from service.uploads import UploadDir
from service.worker import Worker, WorkerConfig

log = structlog.get_logger("sona")
RETENTION_SWEEP_S = 600


def create_app(settings: Settings, *, engine: Engine | None = None) -> web.Application:
    settings = settings.model_copy(update={"data_dir": settings.data_dir.resolve()})
    app = web.Application(
        middlewares=[request_id_middleware, error_middleware, guard_middleware],
        client_max_size=1024 * 1024,  # JSON bodies; uploads stream past this limit
    )
    app[SETTINGS] = settings
    app[API_KEYS] = settings.all_api_keys()
    app[EVENTS] = EventHub()
    app[UPLOADS] = UploadDir(settings.data_dir / "uploads")
    if engine is None:
        from service.engine.whisper import WhisperEngine

        engine = WhisperEngine(
            device=settings.device,
            compute_type=settings.compute_type,
            cpu_threads=settings.cpu_threads,
        )
    app[MODELS] = ModelRegistry(
        engine,
        model_dir=settings.model_dir or settings.data_dir / "models",
        allow_download=settings.allow_download,
        max_loaded=settings.max_loaded_models,
        idle_ttl_s=settings.model_idle_ttl_s,
    )
    app.cleanup_ctx.extend([_store_ctx, _models_ctx, _worker_ctx, _retention_ctx])
    app.on_shutdown.append(_drain)
    routes.setup(app)
    return app


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = app[STORE] = await open_store(settings.store_url)
    app[INTAKE] = Intake(
        store,
        app[MODELS],
        IntakeConfig(
            default_model=settings.default_model,
            max_audio_seconds=settings.max_audio_seconds,
            max_queue=settings.max_queue,
            max_attempts=settings.max_attempts,
        ),
    )
    removed = app[UPLOADS].sweep(await store.file_paths())
    if removed:
        log.info("uploads.swept", files=len(removed))
    yield
    await store.close()


async def _models_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if settings.model:
        entry = await app[MODELS].load(settings.model)
        log.info("model.loaded", model=entry.id, seconds=round(entry.load_seconds, 3))
    yield
    await app[MODELS].unload_all()


async def _worker_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    worker = app[WORKER] = Worker(
        app[STORE],
        app[MODELS],
        app[EVENTS],
        WorkerConfig(
            limits=Limits(settings.max_audio_seconds, settings.vad_min_seconds),
            lease_s=settings.lease_s,
            poll_interval_s=settings.poll_interval_s,
            job_timeout_s=settings.job_timeout_s,
        ),
    )
    task = asyncio.create_task(worker.run(), name="sona-worker")
    yield
    await worker.drain(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _drain(app: web.Application) -> None:
    """on_shutdown: the listener is already closed; let the running job finish."""
    log.info("server.draining", timeout_s=app[SETTINGS].drain_timeout_s)
    await app[WORKER].drain(app[SETTINGS].drain_timeout_s)


async def _sweep_expired(app: web.Application) -> None:
    cutoff = time.time() - app[SETTINGS].retention_hours * 3600
    for job in await app[STORE].finished_before(cutoff):
        await asyncio.to_thread(Path(job.file_path).unlink, missing_ok=True)
        await app[STORE].delete(job.id)


async def _retention_ctx(app: web.Application) -> AsyncIterator[None]:
    """Delete finished jobs and their files after the retention period (A9):
    once before serving, then every RETENTION_SWEEP_S."""

    async def sweep_forever() -> None:
        while True:
            await asyncio.sleep(RETENTION_SWEEP_S)
            try:
                await _sweep_expired(app)
            except Exception:  # a failed sweep is retried next time, never fatal
                log.exception("retention.sweep_failed")

    await _sweep_expired(app)
    task = asyncio.create_task(sweep_forever(), name="sona-retention")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def ready_line(runner: web.AppRunner, settings: Settings) -> dict[str, object]:
    if settings.socket is not None:
        return {"status": "ready", "socket": str(settings.socket)}
    port = runner.addresses[0][1]
    return {"status": "ready", "port": port}


async def serve(settings: Settings) -> int:
    """Run the daemon until a signal; returns the exit code."""
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5, access_log=None)
    await runner.setup()
    site: web.BaseSite
    if settings.socket is not None:
        settings.socket.unlink(missing_ok=True)
        site = web.UnixSite(runner, str(settings.socket))
        await site.start()
        os.chmod(settings.socket, 0o600)
    else:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
    if settings.pidfile:
        settings.pidfile.write_text(f"{os.getpid()}\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            # Second signal: leave now. The job row stays 'processing' under our
            # dead pid and is requeued at the next start.
            log.warning("server.forced_exit", signal=signum)
            os._exit(128 + signum)
        log.info("server.stopping", signal=signum)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    print(json.dumps(ready_line(runner, settings)), flush=True)
    log.info("server.ready", **ready_line(runner, settings))
    await stop.wait()
    await runner.cleanup()
    if settings.pidfile:
        settings.pidfile.unlink(missing_ok=True)
    if settings.socket is not None:
        settings.socket.unlink(missing_ok=True)
    log.info("server.stopped")
    sys.stdout.flush()
    return 0
