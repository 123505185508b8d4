"""The composition root without HTTP: store, uploads, engine process, models,
intake, worker and the background sweeps, started and stopped in order.

``create_app`` (the daemon) and ``sona transcribe`` (one file, no daemon) both
run on it; ``sona worker`` will too. The only place that names concrete
classes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from service.datadir import DataDirLock
from service.engine import EngineConfig, resolve_device
from service.engine.host import ProcessEngineHost
from service.engine.registry import ModelRegistry
from service.events import EventHub
from service.intake import Intake, IntakeConfig
from service.settings import Settings
from service.store import JobStore, open_store
from service.uploads import UploadDir
from service.worker import Worker, WorkerConfig

log = structlog.get_logger("sona")
RETENTION_SWEEP_S = 600
# Where several processes share the upload directory, a file is an orphan only
# once untouched this long (far past the upload idle timeout and any commit).
SHARED_SWEEP_GRACE_S = 3600


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    store: JobStore
    uploads: UploadDir
    events: EventHub
    engine: ProcessEngineHost
    models: ModelRegistry
    intake: Intake
    worker: Worker

    async def drain(self) -> None:
        """Stop taking work; let what runs finish within the drain timeout."""
        log.info("server.draining", timeout_s=self.settings.drain_timeout_s)
        await self.worker.drain(self.settings.drain_timeout_s)


@contextlib.asynccontextmanager
async def start_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """Everything started, in order; on exit, unwound in reverse (only what
    started). Leaving stops the worker where it is: ``drain()`` first for a
    graceful stop."""
    async with contextlib.AsyncExitStack() as stack:
        owner = settings.store_url.startswith("sqlite:")
        if owner:  # one SQLite data dir, one daemon: a second one stops here
            lock = DataDirLock(settings.data_dir)
            lock.acquire()
            stack.callback(lock.release)
        store = await open_store(settings.store_url)
        stack.push_async_callback(store.close)
        uploads = UploadDir(settings.data_dir / "uploads")
        grace = None if owner else SHARED_SWEEP_GRACE_S
        removed = uploads.sweep(await store.file_paths(), grace_s=grace)
        if removed:
            log.info("uploads.swept", files=len(removed))
        engine = ProcessEngineHost(
            EngineConfig(
                device=settings.device,
                compute_type=settings.compute_type,
                cpu_threads=settings.cpu_threads,
                chunk_s=settings.chunk_s,
                nice=settings.engine_nice,
            )
        )
        await engine.start()
        stack.push_async_callback(engine.stop)
        models = ModelRegistry(
            engine,
            model_dir=settings.model_dir or settings.data_dir / "models",
            allow_download=settings.allow_download,
            max_loaded=settings.max_loaded_models,
            idle_ttl_s=settings.model_idle_ttl_s,
        )
        if settings.model:
            entry = await models.load(settings.model)
            log.info("model.loaded", model=entry.id, seconds=round(entry.load_seconds, 3))
        events = EventHub()
        runtime = Runtime(
            settings=settings,
            store=store,
            uploads=uploads,
            events=events,
            engine=engine,
            models=models,
            intake=Intake(store, models, _intake_config(settings)),
            worker=Worker(store, models, engine, events, _worker_config(settings)),
        )
        await _sweep_expired(runtime)
        stack.push_async_callback(_stop_task, _spawn(runtime.worker.run(), "sona-worker"))
        stack.push_async_callback(_stop_task, _spawn(_retention(runtime), "sona-retention"))
        yield runtime


def _intake_config(settings: Settings) -> IntakeConfig:
    return IntakeConfig(
        default_model=settings.default_model,
        max_audio_seconds=settings.max_audio_seconds,
        max_queue=settings.max_queue,
        max_attempts=settings.max_attempts,
    )


def _worker_config(settings: Settings) -> WorkerConfig:
    return WorkerConfig(
        max_audio_seconds=settings.max_audio_seconds,
        batch_size=settings.batch_size or (8 if resolve_device(settings.device) == "cuda" else 4),
        chunk_s=settings.chunk_s,
        beam_size=settings.beam_size,
        max_jobs=settings.max_jobs_in_flight,
        lease_s=settings.lease_s,
        poll_interval_s=settings.poll_interval_s,
        job_timeout_s=settings.job_timeout_s,
        step_timeout_s=settings.step_timeout_s,
    )


def _spawn(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    return asyncio.create_task(coro, name=name)


async def _stop_task(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _sweep_expired(rt: Runtime) -> None:
    cutoff = time.time() - rt.settings.retention_hours * 3600
    for job in await rt.store.finished_before(cutoff):
        await asyncio.to_thread(Path(job.file_path).unlink, missing_ok=True)
        await rt.store.delete(job.id)


async def _retention(rt: Runtime) -> None:
    """Delete finished jobs and their files after the retention period (A9)."""
    while True:
        await asyncio.sleep(RETENTION_SWEEP_S)
        try:
            await _sweep_expired(rt)
        except Exception:  # a failed sweep is retried next time, never fatal
            log.exception("retention.sweep_failed")
