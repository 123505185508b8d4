"""The worker: recover → claim → run → stream segments → finish.

One worker per device. The engine runs in a thread; segments cross back to
the loop through a queue and are written to the store as they come (A3). The
stop flag is checked by the engine between segments, so a cancel, a drain or a
timeout lands within one decoding window."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import structlog

from service.crashpoints import crash_point
from service.engine.registry import ModelRegistry
from service.errors import (
    AudioTooLong,
    Cancelled,
    InvalidAudio,
    InvalidTransition,
    SonaError,
)
from service.events import EventHub
from service.jobs import Job, Status
from service.pipeline import Limits, transcribe_file
from service.store import Claim, JobStore

log = structlog.get_logger("sona.worker")
HOST = socket.gethostname()


@dataclass(frozen=True)
class WorkerConfig:
    limits: Limits
    lease_s: float = 30.0
    poll_interval_s: float = 1.0
    job_timeout_s: float = 6 * 3600
    # How long a timed-out or drained engine thread gets to notice the stop flag
    # before the worker stops waiting for it.
    stop_grace_s: float = 10.0


def owner_is_dead(worker_id: str) -> bool:
    """True when ``worker_id`` (host:pid:nonce) names a process on this host that
    no longer runs, so its jobs can be requeued without waiting for the lease."""
    host, _, rest = worker_id.partition(":")
    pid_text = rest.partition(":")[0]
    if host != HOST or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class _Run:
    """The state of the job in flight."""

    def __init__(self, claim: Claim) -> None:
        self.claim = claim
        self.stop = threading.Event()
        self.reason: str | None = None  # cancel | drain | timeout | lost

    def halt(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.stop.set()


class Worker:
    def __init__(
        self, store: JobStore, models: ModelRegistry, events: EventHub, config: WorkerConfig
    ) -> None:
        self.store = store
        self.models = models
        self.events = events
        self.config = config
        self.worker_id = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.running = False
        self._wake = asyncio.Event()
        self._stopping = False
        self._run: _Run | None = None
        self._free = asyncio.Event()
        self._free.set()
        # One engine thread for the worker's life: CTranslate2 keeps per-thread
        # OpenMP teams, and a pool hopping between threads would multiply them.
        self._engine_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sona-engine")

    @property
    def busy(self) -> bool:
        return self._run is not None

    def wake(self) -> None:
        self._wake.set()

    def request_cancel(self, job_id: str) -> None:
        """Fast path for a cancel in this process; the store flag covers the rest."""
        if self._run and self._run.claim.job.id == job_id:
            self._run.halt("cancel")

    async def recover(self) -> None:
        rec = await self.store.recover(is_dead=owner_is_dead)
        if rec.requeued or rec.failed:
            log.info("jobs.recovered", requeued=rec.requeued, failed=rec.failed)
        for job_id in rec.failed:
            self.events.publish(job_id, "failed", {"status": "failed"})

    async def run(self, *, burst: bool = False) -> None:
        """Work until stopped; with ``burst`` return once the queue is empty."""
        self.running = True
        try:
            await self.recover()
            while not self._stopping:
                try:
                    claim = await self.store.claim(
                        worker_id=self.worker_id,
                        prefer_models=[e.id for e in self.models.entries()],
                        lease_s=self.config.lease_s,
                    )
                    if claim is not None:
                        await self._execute(claim)
                        continue
                except Exception:
                    # A store hiccup (disk full, locked file) must not end the
                    # worker: the job keeps its lease and is recovered later.
                    log.exception("worker.error")
                    await asyncio.sleep(self.config.poll_interval_s)
                    continue
                if burst:
                    return
                await self._idle()
        finally:
            self.running = False
            self._engine_thread.shutdown(wait=False)

    async def _idle(self) -> None:
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), self.config.poll_interval_s)
        except TimeoutError:
            await self.recover()  # leases of other processes may have expired
            await self.models.unload_idle()

    async def drain(self, timeout_s: float) -> None:
        """Stop claiming; give the running job ``timeout_s`` to finish, then abort
        it back to the queue."""
        self._stopping = True
        self.wake()
        try:
            await asyncio.wait_for(self._free.wait(), timeout_s)
        except TimeoutError:
            if self._run is not None:
                self._run.halt("drain")
            await self._free.wait()

    async def _execute(self, claim: Claim) -> None:
        job = claim.job
        bound = log.bind(job_id=job.id, model=job.model, attempt=job.attempts)
        bound.info("job.claimed")
        self.events.publish(job.id, "status", {"status": "processing"})
        run = self._run = _Run(claim)
        self._free.clear()
        try:
            outcome = await self._transcribe(run, bound)
            final = await asyncio.shield(self._finish(run, *outcome))
            if final is not None:
                bound.info(
                    "job.finished",
                    status=final.status,
                    error=final.error_code,
                    seconds=round(time.time() - (final.started_at or time.time()), 3),
                )
        finally:
            self._run = None
            self._free.set()

    async def _transcribe(self, run: _Run, bound: Any) -> tuple[Status, str | None, str | None]:
        """Run the engine; returns (status, error_code, error_message)."""
        job = run.claim.job
        try:
            entry = await self.models.acquire(job.model or "")
        except SonaError as exc:
            return Status.FAILED, exc.code, exc.message
        except Exception as exc:  # a broken model directory fails the job, not the worker
            bound.exception("model.load_failed")
            return Status.FAILED, "model_load_failed", f"{type(exc).__name__}: {exc}"
        try:
            await self._pump(run, entry.model, bound)
        except Cancelled:
            status = {"cancel": Status.CANCELLED, "drain": Status.QUEUED}.get(run.reason or "")
            if run.reason == "timeout":
                return Status.FAILED, "timeout", "the job ran past the wall-time limit"
            return status or Status.CANCELLED, None, None
        except (InvalidAudio, AudioTooLong) as exc:
            return Status.FAILED, exc.code, exc.message
        except SonaError as exc:
            return Status.FAILED, exc.code, exc.message
        except Exception as exc:  # an engine fault fails this job, never the worker
            bound.exception("job.engine_error")
            return Status.FAILED, "engine_error", f"{type(exc).__name__}: {exc}"
        finally:
            self.models.release(entry)
        return Status.COMPLETED, None, None

    async def _pump(self, run: _Run, model: Any, bound: Any) -> None:
        """Start the engine thread and store what it yields until it ends."""
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[tuple[str, tuple[Any, ...]]] = asyncio.Queue()

        def post(kind: str) -> Callable[..., None]:
            def send(*args: Any) -> None:
                loop.call_soon_threadsafe(inbox.put_nowait, (kind, args))

            return send

        job = run.claim.job
        engine = loop.run_in_executor(
            self._engine_thread,
            lambda: transcribe_file(
                model,
                Path(job.file_path),
                job.options,
                self.config.limits,
                on_duration=post("duration"),
                on_segment=post("segment"),
                should_stop=run.stop.is_set,
            ),
        )
        engine.add_done_callback(lambda f: inbox.put_nowait(("done", (f,))))
        deadline = time.monotonic() + self.config.job_timeout_s
        while True:
            try:
                first = await asyncio.wait_for(inbox.get(), self._wait_s(run, deadline))
            except TimeoutError:
                await self._on_quiet(run, deadline, bound)
                continue
            items = [first]
            while not inbox.empty():  # everything already waiting: few, larger commits
                items.append(inbox.get_nowait())
            segments = [args for kind, args in items if kind == "segment"]
            for kind, args in items:
                if kind == "duration":
                    await self._store_duration(run, args[0])
            if segments:
                await self._store_segments(run, segments)
            for kind, args in items:
                if kind == "done":
                    info = args[0].result()  # re-raises the engine's exception
                    await self.store.set_info(
                        run.claim, duration=info.duration, language=info.language
                    )
                    return

    def _wait_s(self, run: _Run, deadline: float) -> float:
        if run.stop.is_set():
            return self.config.stop_grace_s
        return max(0.01, min(self.config.lease_s / 3, deadline - time.monotonic()))

    async def _on_quiet(self, run: _Run, deadline: float, bound: Any) -> None:
        """Nothing came from the engine for a while: stuck, timed out, or just slow."""
        if run.stop.is_set():
            # A decoder hang: threads cannot be killed, so leave this one behind
            # and give the next job a fresh engine thread.
            bound.error("job.engine_stuck", reason=run.reason)
            self._engine_thread.shutdown(wait=False)
            self._engine_thread = ThreadPoolExecutor(1, thread_name_prefix="sona-engine")
            raise Cancelled("the engine did not stop")
        if time.monotonic() >= deadline:
            run.halt("timeout")
        elif not await self.store.heartbeat(run.claim, self.config.lease_s):
            run.halt("cancel")

    async def _store_duration(self, run: _Run, duration: float) -> None:
        job = run.claim.job
        await self.store.set_info(run.claim, duration=duration, language=job.options.language)
        self.events.publish(job.id, "progress", {"duration": duration, "progress": 0.0})

    async def _store_segments(self, run: _Run, batch: list[tuple[Any, ...]]) -> None:
        job = run.claim.job
        processed = max(p for _, p in batch)
        if await self.store.add_segments(run.claim, [s for s, _ in batch], processed):
            run.halt("cancel")
        crash_point("mid_job")  # a poison file: the engine dies with segments stored
        for seg, _ in batch:
            self.events.publish(job.id, "segment", asdict(seg))
        self.events.publish(job.id, "progress", {"processed_seconds": processed})

    async def _finish(
        self, run: _Run, status: Status, code: str | None, message: str | None
    ) -> Job | None:
        try:
            job = await self.store.finish(run.claim, status, error_code=code, error_message=message)
        except InvalidTransition:
            log.warning("job.lease_lost", job_id=run.claim.job.id)
            return None
        kind = job.status.value if job.status.finished else "status"
        self.events.publish(
            job.id, kind, {"status": job.status.value, "error_code": code, "error_message": message}
        )
        return job
