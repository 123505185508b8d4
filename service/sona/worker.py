"""The worker: claim jobs, feed their chunks to the engine's batches, store
each job's segments as they come (A3), finish. One worker per device (A10).

Four small loops share the jobs in flight (``Flight``), each restarted with
backoff if it ever fails, so the worker cannot die quietly:

* claim: take queued jobs while the pool of chunks runs low, or when a more
  urgent job waits (an interactive request), and open them in the engine;
* engine events: cut chunks go to the pool; a prepared, failed or crashed
  engine ends what it must;
* step: the next batch from the pool (``engine/batcher.py``) goes to the
  engine; each job's segments are stored in chunk order; a job whose last
  chunk is stored completes;
* leases: every job's lease is renewed on a timer, whatever the engine is
  doing; a cancel asked in another process and the wall-time limit are
  noticed there too.

Stop means stop: ending a job closes it in the engine, which stops cutting
it at once and drops its chunks, so the batch in flight is the last work
spent on it.

This module does; the deciding is in pure units: which jobs to claim, whom an
engine crash blames, that a suspect's step runs alone (``admission.py``); a
job's in-order store buffer and processed seconds (``flight.py``). Leases are
renewed by ``leases.py``, a claim opened by ``opening.py``, a job's end
written by ``endings.py``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from dataclasses import asdict

import structlog

from sona import admission
from sona.admission import Capacity, Held, StepGate
from sona.crashpoints import crash_point
from sona.endings import Endings
from sona.engine import ChunksReady, Crashed, EngineEvent, EngineHost, Prepared, PrepareFailed
from sona.engine.batcher import Pool
from sona.engine.registry import ModelRegistry
from sona.errors import EngineCrashed, SonaError
from sona.events import EventHub, wait_wake
from sona.flight import Flight
from sona.jobs import Status
from sona.leases import Leases
from sona.loops import Done, Supervisor
from sona.notify import Notifier
from sona.opening import Opener
from sona.standing import Throughput
from sona.store import Claim, JobStore, Lease
from sona.worker_config import StepStats, WorkerConfig, WorkerState

log = structlog.get_logger("sona.worker")


class Worker:
    """One device's worker: ``run`` it; ``wake`` it when a job is queued."""

    def __init__(
        self,
        store: JobStore,
        models: ModelRegistry,
        engine: EngineHost,
        events: EventHub,
        config: WorkerConfig,
        notifier: Notifier,
    ) -> None:
        self.store = store
        self.models = models
        self.engine = engine
        self.events = events
        self.config = config
        self.worker_id = f"{admission.HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.running = False
        self.flights: dict[str, Flight] = {}
        self.capacity = Capacity(config.batch_size, config.parallel_steps, config.max_jobs)
        self.leases = Leases(store, config.lease_s)
        self.endings = Endings(store, events, notifier)
        self.opener = Opener(
            models, self.endings, beam_size=config.beam_size, max_seconds=config.max_audio_seconds
        )
        self.loops = Supervisor(config.poll_interval_s)
        self.pool = Pool()
        self.stats = StepStats()
        self.throughput = Throughput()  # for the ETA of the jobs in the queue
        self._wake = asyncio.Event()  # claim: a new job, or room for one
        self._work = asyncio.Event()  # step: chunks in the pool, or a job ended
        self._landed = asyncio.Event()  # no job in flight
        self._landed.set()
        self._stopping = False
        self._gate = StepGate()
        self._drained = False

    @property
    def loop_failures(self) -> int:
        """Errors the loops survived, all together."""
        return self.loops.failures

    @property
    def state(self) -> WorkerState:
        """``running``; ``retrying`` while a loop waits out an error (a full disk, a
        locked database); ``drained`` after a drain or a burst; ``stopped`` when
        the worker is not running for any other reason (it never ran, or its task
        ended): that last one is what ``/health`` must not hide."""
        if self.running:
            return "retrying" if self.loops.failing else "running"
        return "drained" if self._drained else "stopped"

    def wake(self) -> None:
        self._wake.set()

    async def run(self, *, burst: bool = False) -> None:
        """Work until drained (or cancelled); with ``burst`` return once nothing is
        left to do."""
        self.running = True
        helpers = [
            asyncio.create_task(self.loops.forever("claim", self._claim_once)),
            asyncio.create_task(self.loops.forever("engine", self._engine_once)),
            asyncio.create_task(self.loops.forever("leases", self._lease_once)),
        ]
        try:
            await self.loops.forever("recover", self._recover, until_done=True)
            # One step loop per parallel step. Each ends on its own once nothing is
            # left; ending them together would cut one short in a job's last write.
            await asyncio.gather(
                *(self._step_loop(burst) for _ in range(self.config.parallel_steps))
            )
            self._drained = True
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            self.running = False

    async def _step_loop(self, burst: bool) -> None:
        with contextlib.suppress(Done):  # drained, or a burst with nothing left
            await self.loops.forever("step", lambda: self._step_once(burst))

    async def _recover(self) -> None:
        rec = await self.store.recover(is_dead=admission.owner_is_dead)
        if rec.requeued:
            log.info("jobs.recovered", requeued=rec.requeued)
            self.wake()

    # -- claim ---------------------------------------------------------------

    async def _claim_once(self) -> None:
        claim = None
        if admission.may_claim(len(self.flights), self.capacity, stopping=self._stopping):
            claim = await self.store.claim(
                worker_id=self.worker_id,
                prefer_models=[e.id for e in self.models.entries()],
                lease_s=self.config.lease_s,
                min_priority=admission.min_priority(
                    [f.job.priority for f in self.flights.values()], len(self.pool), self.capacity
                ),
            )
        if claim is not None:
            await self._open(claim)
            return
        self._wake.clear()
        if not await wait_wake(self._wake, self.config.poll_interval_s) and not self._stopping:
            await self._recover()  # leases of other processes may have expired
            await self.models.unload_idle()

    async def _open(self, claim: Claim) -> None:
        with self.leases.opening(claim):  # renewed from now on, a slow model load included
            opened = await self.opener.open(claim)
        if opened is None:
            return  # ended instead
        job = claim.job
        if (stale := self.flights.get(job.id)) is not None:
            self._forget(stale)  # its lease was lost, and now it is ours again
        deadline = time.monotonic() + self.config.job_timeout_s
        flight = self.flights[job.id] = Flight(claim, opened[1], opened[0], deadline)
        self._landed.clear()
        self.throughput.set_busy(time.monotonic(), True)
        self.events.publish(job.id, "status", {"status": "processing"})
        log.info(
            "job.claimed",
            job_id=job.id,
            model=job.model,
            attempt=job.attempts,
            resume_after_chunks=job.chunks_done,
            crashes=job.crashes,
        )
        flight.generation = self.engine.generation
        self.engine.open(flight.spec)

    # -- engine events -------------------------------------------------------

    async def _engine_once(self) -> None:
        event: EngineEvent = await self.engine.events.get()
        if isinstance(event, Crashed):
            await self._on_crash(event)
            return
        flight = self.flights.get(event.job_id)
        if flight is None or event.token != flight.claim.token:
            return  # ended meanwhile, or about an earlier claim of the job
        match event:
            case ChunksReady(_, chunks, language, _, probability):
                flight.language, flight.language_probability = language, probability
                for pending in flight.cut(chunks, language):
                    self.pool.add(pending)
                self._work.set()
            case Prepared(_, duration, total, _, warnings, language, probability):
                flight.total = total
                if language is not None:  # a resume whose chunks were all stored announced none
                    flight.language, flight.language_probability = language, probability
                # A live job with no speech after its stored turns keeps theirs.
                spoken = flight.language or flight.job.language or flight.spec.options.language
                try:
                    await self.store.set_info(
                        flight.claim,
                        duration=duration,
                        language=spoken,
                        warnings=list(warnings),
                        language_probability=flight.language_probability,
                    )
                except Exception:
                    self._let_go(flight)  # the event is lost with the write: re-run it
                    return
                self.events.publish(flight.job.id, "progress", {"duration": duration})
                await self._complete_if_done(flight)
            case PrepareFailed(_, code, message):
                await self._end(flight, Status.FAILED, code, message)

    async def _on_crash(self, event: Crashed) -> None:
        """The engine died: every job it held is requeued, its crash counted
        unless Sona killed the engine itself; crashes past max_attempts fail.
        A suspect caught in its step (it runs alone) takes the blame alone."""
        hit = [f for f in self.flights.values() if f.generation < self.engine.generation]
        held = [Held(f.job.id, f.generation >= 0, f.suspect) for f in hit]
        guilty = admission.blamed(held, event.stepping, deliberate=event.deliberate)
        for flight in hit:  # all of them first: a failing write below must not strand one
            self._forget(flight)
        for flight in hit:
            await self.endings.crashed(flight.claim, blamed=flight.job.id in guilty)
        self._settle()
        self.wake()

    # -- step ----------------------------------------------------------------

    async def _step_once(self, burst: bool) -> None:
        cutting = any(f.total is None for f in self.flights.values())
        size = admission.step_size(self.capacity, len(self.pool), cutting=cutting)
        taken = self.pool.take_batch(size, self.config.chunk_s)
        batch = [p.chunk for p in taken]
        batch = [c for c in batch if c.job_id in self.flights]
        if not batch:
            if not self.flights and (
                self._stopping or (burst and await self.store.queue_size() == 0)
            ):
                raise Done  # drained, or a burst with nothing left
            self._work.clear()
            await wait_wake(self._work, self.config.poll_interval_s)
            return
        self.wake()  # the pool shrank: maybe room for another job
        # The flights the batch was cut for. One let go during the step (a failed
        # write) may be claimed again before it ends: that new flight has its own
        # chunks, and this step's results are not its.
        flights = {c.job_id: self.flights[c.job_id] for c in batch}
        model_id = flights[batch[0].job_id].spec.model_id
        try:
            async with self._gate.step(alone=any(p.suspect for p in taken)):
                started = time.monotonic()
                results = await asyncio.wait_for(
                    self.engine.step(model_id, batch), self.config.step_timeout_s
                )
        except TimeoutError:
            await self._on_hung_step(self._still_flying(flights))
            return
        except EngineCrashed:
            return  # the engine loop requeues or fails what was in flight
        except SonaError as exc:
            for flight in self._still_flying(flights):
                await self._end(flight, Status.FAILED, exc.code, exc.message)
            return
        self.stats.record(batch, time.monotonic() - started)
        for chunk, segments in zip(batch, results, strict=True):
            flight = flights[chunk.job_id]
            if self._flying(flight):
                flight.decoded[chunk.no] = segments
        for flight in self._still_flying(flights):
            await self._store_decoded(flight)

    def _still_flying(self, flights: dict[str, Flight]) -> list[Flight]:
        """Those of ``flights`` this worker still runs: the same claim, not a later one."""
        return [f for f in flights.values() if self._flying(f)]

    async def _on_hung_step(self, flights: list[Flight]) -> None:
        log.error("engine.step_hung", jobs=[f.job.id for f in flights])
        for flight in flights:
            await self._end(flight, Status.FAILED, "timeout", "the engine hung on this job's audio")
        await self.engine.kill()  # the others are requeued, their crash not counted

    async def _store_decoded(self, flight: Flight) -> None:
        """Store the decoded chunks that come next in order. Steps run in
        parallel and may end out of order: one write at a time per job, and
        whatever landed meanwhile goes in the next."""
        if flight.storing:
            return  # the write under way goes on with these
        flight.storing = True
        try:
            while flight.ready() and self._flying(flight):
                await self._store_next(flight)
        finally:
            flight.storing = False

    def _flying(self, flight: Flight) -> bool:
        return self.flights.get(flight.job.id) is flight

    async def _store_next(self, flight: Flight) -> None:
        """The decoded chunks that come next in order, in one transaction."""
        write = flight.take_write()
        try:
            lease = await self.store.add_chunks(
                flight.claim,
                first=write.first,
                count=write.count,
                segments=write.segments,
                processed_seconds=write.processed_seconds,
            )
        except Exception:
            self._let_go(flight)
            return
        self.throughput.add(time.monotonic(), flight.stored(write))
        crash_point("mid_job", flight.job.id)  # segments stored, the job not finished
        for seg in write.segments:
            self.events.publish(flight.job.id, "segment", asdict(seg))
        progress = {"processed_seconds": write.processed_seconds}
        self.events.publish(flight.job.id, "progress", progress)
        if lease is Lease.LOST:
            self._forget(flight)
            self._settle()
        elif lease is Lease.CANCEL_REQUESTED:
            await self._end(flight, Status.CANCELLED)
        else:
            await self._complete_if_done(flight)

    async def _complete_if_done(self, flight: Flight) -> None:
        if flight.done:
            await self._end(flight, Status.COMPLETED)

    # -- leases, cancel, drain -----------------------------------------------

    async def _lease_once(self) -> None:
        # Closed even when cancelled between two verdicts (a drain, a stop).
        async with contextlib.aclosing(self.leases.round(self.flights)) as verdicts:
            async for flight, verdict in verdicts:
                if verdict == "overdue":
                    limit = f"{self.config.job_timeout_s:.0f} s"
                    await self._end(flight, Status.FAILED, "timeout", f"the job ran past {limit}")
                elif verdict is Lease.LOST:
                    log.warning("job.lease_lost", job_id=flight.job.id)
                    self._forget(flight)
                    self._settle()
                else:
                    await self._end(flight, Status.CANCELLED)

    async def cancel(self, job_id: str) -> None:
        """Stop a job running here now (the store's flag reaches it anyway, later)."""
        if flight := self.flights.get(job_id):
            await self._end(flight, Status.CANCELLED)

    async def drain(self, timeout_s: float) -> None:
        """Stop claiming; give the jobs in flight ``timeout_s`` to finish, then put
        them back in the queue (no attempt counted)."""
        self._stopping = True
        self.wake()
        try:
            await asyncio.wait_for(self._landed.wait(), timeout_s)
        except TimeoutError:
            for flight in list(self.flights.values()):
                await self._end(flight, Status.QUEUED)

    # -- ending a job --------------------------------------------------------

    def _forget(self, flight: Flight) -> None:
        """Drop a job from this worker: the engine stops on it, its chunks leave
        the pool. Its row is someone else's business now."""
        if self.flights.get(flight.job.id) is not flight:
            return  # gone already (or a later claim of the same job runs now)
        del self.flights[flight.job.id]
        self.pool.drop_job(flight.job.id)
        self.engine.close(flight.job.id)
        self.models.release(flight.entry)
        self._work.set()
        self.wake()

    def _let_go(self, flight: Flight) -> None:
        """A write for this job failed (a full disk, say) and what it carried is
        lost: let the job go. Its lease lapses, recovery requeues it (this
        worker's idle loop does, once the store works again) and the re-run
        resumes after what was stored. Nothing waits on a write that never came."""
        log.exception("job.store_failed", job_id=flight.job.id)
        self._forget(flight)
        self._settle()

    def _settle(self) -> None:
        """After a job's last write: a drain waiting for the worker may go on."""
        if not self.flights:
            self._landed.set()
            self.throughput.set_busy(time.monotonic(), False)

    async def _end(
        self, flight: Flight, status: Status, code: str | None = None, message: str | None = None
    ) -> None:
        if self.flights.get(flight.job.id) is not flight:
            return  # ended already
        self._forget(flight)
        try:
            await self.endings.finish(flight.claim, status, code, message)
        finally:
            self._settle()
