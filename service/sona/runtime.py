"""The composition root without HTTP: store, uploads, engine process, models,
intake, worker, webhook dispatcher and the background sweeps, started and
stopped in order.

``create_app`` (the daemon), ``sona worker`` (a worker node, no API) and
``sona transcribe`` (one file, no daemon) run on it; with ``settings.worker``
off it is an API node: no engine, no worker (docs/scaling.md). The only place
that names concrete classes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from sona.datadir import DataDirLock
from sona.dispatcher import Dispatcher, DispatcherConfig
from sona.engine import (
    EngineConfig,
    resolve_cpu_threads,
    resolve_device,
    resolve_parallel_steps,
)
from sona.engine.host import ProcessEngineHost
from sona.engine.registry import ModelRegistry
from sona.events import TERMINAL, EventHub
from sona.intake import Intake, IntakeConfig
from sona.logs import resolve_format
from sona.metrics import LiveState, Metrics, watch_jobs
from sona.notify import Handlers, Notifier, notifier_for
from sona.settings import Settings
from sona.store import JobStore, open_store
from sona.uploads import UploadDir
from sona.webhooks import RetryPolicy, signer_for
from sona.worker import Worker
from sona.worker_config import WorkerConfig

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
    notifier: Notifier
    models: ModelRegistry
    intake: Intake
    engine: ProcessEngineHost | None  # None on an API node
    worker: Worker | None  # None on an API node
    webhooks: Dispatcher
    metrics: Metrics

    async def drain(self) -> None:
        """Stop taking work; let what runs finish, then send the webhooks that are
        due, all within the drain timeout (B5)."""
        timeout = self.settings.drain_timeout_s
        log.info("server.draining", timeout_s=timeout)
        deadline = time.monotonic() + timeout
        if self.worker is not None:
            await self.worker.drain(timeout)
        await self.webhooks.drain(deadline - time.monotonic())


@contextlib.asynccontextmanager
async def start_runtime(
    settings: Settings, metrics: Metrics | None = None
) -> AsyncIterator[Runtime]:
    """Everything started, in order; on exit, unwound in reverse (only what
    started). Leaving stops the worker where it is: ``drain()`` first for a
    graceful stop. ``metrics``: the daemon's (it serves them); a private one
    otherwise."""
    # A malformed secret stops the start before anything slow (a model load).
    signer = signer_for(
        settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    )
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
        engine = await _start_engine(settings, stack) if settings.worker else None
        models = ModelRegistry(
            engine,
            model_dir=settings.model_dir or settings.data_dir / "models",
            allow_download=settings.allow_download,
            max_loaded=settings.max_loaded_models,
            idle_ttl_s=settings.model_idle_ttl_s,
        )
        if settings.model and engine is not None:
            entry = await models.load(settings.model)
            log.info("model.loaded", model=entry.id, seconds=round(entry.load_seconds, 3))
        events = EventHub()
        metrics = metrics or Metrics()
        notifier = notifier_for(settings.store_url)  # started once the worker exists
        worker = None
        if engine is not None:
            worker = Worker(store, models, engine, events, _worker_config(settings), notifier)
        await notifier.start(_handlers(events, worker))
        stack.push_async_callback(notifier.close)
        events.relay = notifier.job_event
        runtime = Runtime(
            settings=settings,
            store=store,
            uploads=uploads,
            events=events,
            notifier=notifier,
            models=models,
            intake=Intake(store, models, _intake_config(settings)),
            engine=engine,
            worker=worker,
            webhooks=Dispatcher(
                store, signer, _dispatcher_config(settings), record=metrics.webhook_delivery
            ),
            metrics=metrics,
        )
        runtime.metrics.bind_live(lambda: _live_state(runtime))
        await _sweep_expired(runtime)
        if worker is not None:  # its first round requeues a dead daemon's jobs, live ones too
            stack.push_async_callback(_stop_task, _spawn(worker.run(), "sona-worker"))
        stack.push_async_callback(_stop_task, _spawn(runtime.webhooks.run(), "sona-webhooks"))
        stack.push_async_callback(_stop_task, _spawn(_wake_on_end(runtime), "sona-webhook-wake"))
        stack.push_async_callback(_stop_task, _spawn(_retention(runtime), "sona-retention"))
        stack.push_async_callback(
            _stop_task, _spawn(watch_jobs(runtime.metrics, store, events), "sona-metrics")
        )
        yield runtime


def _live_state(rt: Runtime) -> LiveState:
    """On an API node (no engine, no worker) the engine's figures stay at zero."""
    stats = rt.worker.stats if rt.worker else None
    return LiveState(
        engine_restarts=rt.engine.restarts if rt.engine else 0,
        engine_pid=rt.engine.pid if rt.engine else None,
        busy_seconds=stats.busy_s if stats else 0.0,
        steps=stats.steps if stats else 0,
        uptime_seconds=time.monotonic() - rt.metrics.started,
        loaded_models={e.id: e.load_seconds for e in rt.models.entries()},
    )


async def _start_engine(settings: Settings, stack: contextlib.AsyncExitStack) -> ProcessEngineHost:
    steps = resolve_parallel_steps(settings.parallel_steps, settings.device)
    engine = ProcessEngineHost(
        EngineConfig(
            device=settings.device,
            compute_type=settings.compute_type,
            cpu_threads=resolve_cpu_threads(settings.cpu_threads, steps),
            replicas=steps,
            chunk_s=settings.chunk_s,
            nice=settings.engine_nice,
            fit_windows=settings.fit_windows,
            max_sequential_seconds=settings.max_sequential_seconds,
            log_level=settings.log_level,
            log_format=resolve_format(settings.log_format),
            load_timeout_s=settings.model_load_timeout_s,
            ping_interval_s=min(1.0, settings.engine_ping_timeout_s / 4),
            ping_timeout_s=settings.engine_ping_timeout_s,
        )
    )
    await engine.start()
    stack.push_async_callback(engine.stop)
    return engine


def _handlers(events: EventHub, worker: Worker | None) -> Handlers:
    """What this node does when another node (or its own API) says something."""
    if worker is None:
        return Handlers(event=events.deliver)
    return Handlers(queued=lambda _id: worker.wake(), cancel=worker.cancel, event=events.deliver)


def _intake_config(settings: Settings) -> IntakeConfig:
    return IntakeConfig(
        default_model=settings.default_model,
        max_audio_seconds=settings.max_audio_seconds,
        max_sequential_seconds=settings.max_sequential_seconds,
        max_queue=settings.max_queue,
        max_attempts=settings.max_attempts,
        allow_private_urls=settings.private_urls_allowed,
    )


def _worker_config(settings: Settings) -> WorkerConfig:
    return WorkerConfig(
        max_audio_seconds=settings.max_audio_seconds,
        batch_size=settings.batch_size or (8 if resolve_device(settings.device) == "cuda" else 4),
        chunk_s=settings.chunk_s,
        parallel_steps=resolve_parallel_steps(settings.parallel_steps, settings.device),
        beam_size=settings.beam_size,
        max_jobs=settings.max_jobs_in_flight,
        lease_s=settings.lease_s,
        poll_interval_s=settings.poll_interval_s,
        job_timeout_s=settings.job_timeout_s,
        step_timeout_s=settings.step_timeout_s,
    )


def _dispatcher_config(settings: Settings) -> DispatcherConfig:
    return DispatcherConfig(
        policy=RetryPolicy(settings.webhook_max_attempts, settings.webhook_backoff_s),
        timeout_s=settings.webhook_timeout_s,
        allow_private=settings.private_urls_allowed,
        poll_interval_s=settings.poll_interval_s,
        public_url=settings.public_url,
    )


async def _wake_on_end(rt: Runtime) -> None:
    """A job that ends here may have a webhook due now: no poll interval's wait."""
    with rt.events.subscribe_all() as queue:
        while True:
            event = await queue.get()
            if event.type in TERMINAL:
                rt.webhooks.wake()


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
