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

A job that crashed the engine before is a suspect: it runs beside the others,
but each of its chunks is a batch of its own (``Pending.suspect``) and that
step runs with no other step in flight (``StepGate``). If the engine dies in
it, the crash is the suspect's alone; the other jobs are requeued unblamed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import structlog

from sona.audio import probe
from sona.crashpoints import crash_point
from sona.engine import (
    ChunkInfo,
    ChunksReady,
    Crashed,
    EngineEvent,
    EngineHost,
    JobSpec,
    Prepared,
    PrepareFailed,
)
from sona.engine.batcher import Pending, Pool, batch_key
from sona.engine.registry import ModelEntry, ModelRegistry
from sona.errors import EngineCrashed, InvalidTransition, ModelLoadFailed, SonaError
from sona.events import EventHub
from sona.jobs import Job, Segment, Status
from sona.settings import default_of
from sona.standing import Throughput
from sona.store import Claim, JobStore, Lease

log = structlog.get_logger("sona.worker")
HOST = socket.gethostname()
BACKOFF_MAX_S = 30.0


WorkerState = Literal["running", "retrying", "drained", "stopped"]


@dataclass(frozen=True)
class WorkerConfig:
    """Defaults are Settings' own (``default_of``): the runtime builds this from
    its Settings; tests name what they change."""

    max_audio_seconds: float
    batch_size: int = 8  # windows of speech per engine step (the CUDA default)
    parallel_steps: int = 1  # engine steps in flight at once (EngineConfig.replicas)
    chunk_s: float = default_of("chunk_s")  # most speech in one window
    beam_size: int = default_of("beam_size")  # when a job does not say
    # Jobs in flight at once, their chunks sharing batches.
    max_jobs: int = default_of("max_jobs_in_flight")
    lease_s: float = default_of("lease_s")
    poll_interval_s: float = default_of("poll_interval_s")
    job_timeout_s: float = default_of("job_timeout_s")
    step_timeout_s: float = default_of("step_timeout_s")  # past this the engine hung: kill it


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


@dataclass
class StepStats:
    """What the batches have been like, for operators and the tests."""

    steps: int = 0
    chunks: int = 0
    most_jobs_in_a_step: int = 0
    last_step_s: float = 0.0
    busy_s: float = 0.0  # time the engine spent in steps, all told

    def record(self, batch: list[ChunkInfo], seconds: float) -> None:
        self.steps += 1
        self.chunks += len(batch)
        self.busy_s += seconds
        jobs = len({c.job_id for c in batch})
        self.most_jobs_in_a_step = max(self.most_jobs_in_a_step, jobs)
        self.last_step_s = seconds


@dataclass
class Flight:
    """A job in flight: claimed, opened in the engine, its chunks on the way."""

    claim: Claim
    spec: JobSpec
    entry: ModelEntry
    deadline: float
    generation: int = -1  # the engine process it was opened in; -1: not yet
    total: int | None = None  # chunks in all, once the engine has cut them all
    language: str | None = None
    language_probability: float | None = None  # None: the job named its language
    chunks: dict[int, ChunkInfo] = field(default_factory=dict)
    decoded: dict[int, list[Segment]] = field(default_factory=dict)
    storing: bool = False  # a write of decoded chunks is under way (one at a time)
    channel_end: list[float] = field(default_factory=lambda: [0.0, 0.0])

    @property
    def job(self) -> Job:
        return self.claim.job

    @property
    def suspect(self) -> bool:
        """The engine died with this job in flight before: it may be the cause."""
        return self.claim.job.crashes > 0


class StepGate:
    """The steps in flight. A suspect's step goes in alone: it waits for the
    others to end, and no other starts until it has."""

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self._running = 0
        self._alone = False  # a suspect's step runs, or waits to
        self._waiting_alone = 0

    @contextlib.asynccontextmanager
    async def step(self, alone: bool) -> AsyncIterator[None]:
        async with self._cond:
            if alone:
                self._waiting_alone += 1
                try:
                    await self._cond.wait_for(lambda: self._running == 0)
                finally:  # a cancelled wait must not hold the others back
                    self._waiting_alone -= 1
                    self._cond.notify_all()
            else:
                await self._cond.wait_for(lambda: not self._alone and not self._waiting_alone)
            self._running += 1
            self._alone = alone
        try:
            yield
        finally:
            async with self._cond:
                self._running -= 1
                self._alone = False
                self._cond.notify_all()


class Worker:
    def __init__(
        self,
        store: JobStore,
        models: ModelRegistry,
        engine: EngineHost,
        events: EventHub,
        config: WorkerConfig,
    ) -> None:
        self.store = store
        self.models = models
        self.engine = engine
        self.events = events
        self.config = config
        self.worker_id = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.running = False
        self.flights: dict[str, Flight] = {}
        self._opening: dict[str, Claim] = {}  # claimed, their model still loading
        self.pool = Pool()
        self.stats = StepStats()
        self.throughput = Throughput()  # for the ETA of the jobs in the queue
        self._wake = asyncio.Event()  # claim: a new job, or room for one
        self._work = asyncio.Event()  # step: chunks in the pool, or a job ended
        self._landed = asyncio.Event()  # no job in flight
        self._landed.set()
        self._stopping = False
        self._gate = StepGate()
        self._failing: set[str] = set()  # loops waiting out a backoff after an error
        self._drained = False
        self.loop_failures = 0  # errors survived, all loops together

    @property
    def state(self) -> WorkerState:
        """``running``; ``retrying`` while a loop waits out an error (a full disk, a
        locked database); ``drained`` after a drain or a burst; ``stopped`` when
        the worker is not running for any other reason (it never ran, or its task
        ended): that last one is what ``/health`` must not hide."""
        if self.running:
            return "retrying" if self._failing else "running"
        return "drained" if self._drained else "stopped"

    def wake(self) -> None:
        self._wake.set()

    async def run(self, *, burst: bool = False) -> None:
        """Work until drained (or cancelled); with ``burst`` return once nothing is
        left to do."""
        self.running = True
        helpers = [
            asyncio.create_task(self._forever("claim", self._claim_once)),
            asyncio.create_task(self._forever("engine", self._engine_once)),
            asyncio.create_task(self._forever("leases", self._lease_once)),
        ]
        try:
            await self._forever("recover", self._recover, until_done=True)
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
        with contextlib.suppress(_Done):  # drained, or a burst with nothing left
            await self._forever("step", lambda: self._step_once(burst))

    async def _forever(
        self, name: str, once: Callable[[], Awaitable[None]], *, until_done: bool = False
    ) -> None:
        """Run ``once`` over and over (or, ``until_done``, until it succeeds); an
        error (a full disk, a locked database) is logged and retried with
        backoff, never the end of the worker (A8)."""
        delay = self.config.poll_interval_s
        while True:
            try:
                await once()
                self._failing.discard(name)
                if until_done:
                    return
                delay = self.config.poll_interval_s
            except (asyncio.CancelledError, _Done):
                raise
            except Exception:
                self._failing.add(name)
                self.loop_failures += 1
                log.exception("worker.loop_failed", loop=name, retry_s=round(delay, 2))
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)

    async def _recover(self) -> None:
        rec = await self.store.recover(is_dead=owner_is_dead)
        if rec.requeued:
            log.info("jobs.recovered", requeued=rec.requeued)
            self.wake()

    # -- claim ---------------------------------------------------------------

    async def _claim_once(self) -> None:
        claim = None
        # Past max_jobs only more urgent jobs get in, up to twice as many.
        if not self._stopping and len(self.flights) < 2 * self.config.max_jobs:
            claim = await self.store.claim(
                worker_id=self.worker_id,
                prefer_models=[e.id for e in self.models.entries()],
                lease_s=self.config.lease_s,
                min_priority=self._min_priority(),
            )
        if claim is not None:
            await self._open(claim)
            return
        self._wake.clear()
        if not await _wait(self._wake, self.config.poll_interval_s) and not self._stopping:
            await self._recover()  # leases of other processes may have expired
            await self.models.unload_idle()

    def _min_priority(self) -> int | None:
        """Any job gets in while fewer are in flight than a round of steps has
        rows (the fair share gives each a row at once: a clip behind a long job
        is claimed and decoded now), or while the pool runs low. Past that, or
        at max_jobs, only a more urgent job (an interactive request, C4) jumps
        in, and the rest stay queued for a less busy worker."""
        rows = self.config.batch_size * self.config.parallel_steps
        hungry = len(self.pool) < 2 * self.config.batch_size or len(self.flights) < rows
        if hungry and len(self.flights) < self.config.max_jobs:
            return None
        return max((f.job.priority for f in self.flights.values()), default=0) + 1

    async def _open(self, claim: Claim) -> None:
        # Its lease is renewed from now on, a slow model load included.
        self._opening[claim.job.id] = claim
        try:
            await self._open_claimed(claim)
        finally:
            self._opening.pop(claim.job.id, None)

    async def _open_claimed(self, claim: Claim) -> None:
        job = claim.job
        bound = log.bind(job_id=job.id, model=job.model, attempt=job.attempts)
        try:
            entry = await self.models.acquire(job.model or "")
        except EngineCrashed as exc:  # died or hung loading: retried like a crash mid-job
            bound.warning("model.load_crashed", reason=exc.message)
            await self._crashed(claim, blamed=not exc.deliberate)
            return
        except SonaError as exc:
            await self._finish(claim, Status.FAILED, exc.code, exc.message)
            return
        except Exception as exc:  # a broken model directory fails the job, not the worker
            bound.exception("model.load_failed")
            err = ModelLoadFailed(f"{type(exc).__name__}: {exc}")
            await self._finish(claim, Status.FAILED, err.code, err.message)
            return
        try:
            spec = await self._spec(claim, entry)
        except SonaError as exc:  # the upload is gone or unreadable
            self.models.release(entry)
            await self._finish(claim, Status.FAILED, exc.code, exc.message)
            return
        if (stale := self.flights.get(job.id)) is not None:
            self._forget(stale)  # its lease was lost, and now it is ours again
        deadline = time.monotonic() + self.config.job_timeout_s
        flight = self.flights[job.id] = Flight(claim, spec, entry, deadline)
        self._landed.clear()
        self.throughput.set_busy(time.monotonic(), True)
        self.events.publish(job.id, "status", {"status": "processing"})
        bound.info("job.claimed", resume_after_chunks=job.chunks_done, crashes=job.crashes)
        flight.generation = self.engine.generation
        self.engine.open(flight.spec)

    async def _spec(self, claim: Claim, entry: ModelEntry) -> JobSpec:
        job = claim.job
        options = job.options
        # Sequential decoding keeps faster-whisper's own default beam.
        beam = options.beam_size or (
            5 if options.condition_on_previous_text else self.config.beam_size
        )
        channels = 1
        if options.diarize == "channels":
            channels = 2 if (await asyncio.to_thread(probe, Path(job.file_path)))[1] >= 2 else 1
        return JobSpec(
            job_id=job.id,
            path=Path(job.file_path),
            options=options.model_copy(update={"beam_size": beam}),
            model_id=entry.id,
            max_seconds=self.config.max_audio_seconds,
            # VAD cuts the chunks at silences and keeps Whisper from inventing text
            # over them (F9); without it, chunks are plain 30 s slices.
            vad=options.vad_filter is not False,
            channels=channels,
            skip_chunks=job.chunks_done,
            token=claim.token,
        )

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
                for chunk in chunks:
                    flight.chunks[chunk.no] = chunk
                    key = batch_key(
                        flight.spec.model_id, flight.spec.options, language, chunk.job_id
                    )
                    job = flight.job
                    self.pool.add(Pending(chunk, key, job.priority, job.created_at, flight.suspect))
                self._work.set()
            case Prepared(_, duration, total, _, warnings, language, probability):
                flight.total = total
                if language is not None:  # a resume whose chunks were all stored announced none
                    flight.language, flight.language_probability = language, probability
                try:
                    await self.store.set_info(
                        flight.claim,
                        duration=duration,
                        language=flight.language or flight.spec.options.language,
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
        caught = {f.job.id for f in hit if f.suspect} & event.stepping
        for flight in hit:  # all of them first: a failing write below must not strand one
            self._forget(flight)
        for flight in hit:
            innocent = bool(caught) and flight.job.id not in caught
            blamed = not (event.deliberate or flight.generation < 0 or innocent)
            await self._crashed(flight.claim, blamed=blamed)
        self._settle()
        self.wake()

    async def _crashed(self, claim: Claim, *, blamed: bool) -> None:
        """The engine died with this claim's job in it: requeue the job, counting
        the crash if it is to blame (past max_attempts it fails)."""
        if not blamed:
            await self._finish(claim, Status.QUEUED, None, None)
            return
        try:
            job = await self.store.engine_crashed(claim)
        except InvalidTransition:
            log.warning("job.lease_lost", job_id=claim.job.id)
            return
        except Exception:  # left to recovery, which requeues without counting
            log.exception("job.store_failed", job_id=claim.job.id)
            return
        log.warning("job.engine_crashed", job_id=job.id, status=job.status, crashes=job.crashes)
        self._publish_end(job)

    # -- step ----------------------------------------------------------------

    async def _step_once(self, burst: bool) -> None:
        taken = self.pool.take_batch(self.config.batch_size, self.config.chunk_s)
        batch = [p.chunk for p in taken]
        batch = [c for c in batch if c.job_id in self.flights]
        if not batch:
            if not self.flights and (
                self._stopping or (burst and await self.store.queue_size() == 0)
            ):
                raise _Done  # drained, or a burst with nothing left
            self._work.clear()
            await _wait(self._work, self.config.poll_interval_s)
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
            while flight.job.chunks_done in flight.decoded and self._flying(flight):
                await self._store_next(flight)
        finally:
            flight.storing = False

    def _flying(self, flight: Flight) -> bool:
        return self.flights.get(flight.job.id) is flight

    async def _store_next(self, flight: Flight) -> None:
        """The decoded chunks that come next in order, in one transaction."""
        first, nos = flight.job.chunks_done, list[int]()
        while first + len(nos) in flight.decoded:
            nos.append(first + len(nos))
        index = flight.job.segments_done
        segments = []
        for no in nos:
            decoded = flight.decoded.pop(no)
            for seg in decoded:
                segments.append(replace(seg, index=index))
                index += 1
            chunk = flight.chunks.pop(no)
            # A sequential job's "chunk" is one segment, timed only once decoded.
            ends = [chunk.end, *(s.end for s in decoded)]
            flight.channel_end[chunk.channel] = max(flight.channel_end[chunk.channel], *ends)
        processed = sum(flight.channel_end[: flight.spec.channels]) / flight.spec.channels
        try:
            lease = await self.store.add_chunks(
                flight.claim,
                first=first,
                count=len(nos),
                segments=segments,
                processed_seconds=processed,
            )
        except Exception:
            self._let_go(flight)
            return
        flight.job.chunks_done += len(nos)
        flight.job.segments_done = index
        self.throughput.add(time.monotonic(), processed - flight.job.processed_seconds)
        flight.job.processed_seconds = processed
        crash_point("mid_job", flight.job.id)  # segments stored, the job not finished
        for seg in segments:
            self.events.publish(flight.job.id, "segment", asdict(seg))
        self.events.publish(flight.job.id, "progress", {"processed_seconds": processed})
        if lease is Lease.LOST:
            self._forget(flight)
            self._settle()
        elif lease is Lease.CANCEL_REQUESTED:
            await self._end(flight, Status.CANCELLED)
        else:
            await self._complete_if_done(flight)

    async def _complete_if_done(self, flight: Flight) -> None:
        if flight.total is not None and flight.job.chunks_done >= flight.total:
            await self._end(flight, Status.COMPLETED)

    # -- leases, cancel, drain -----------------------------------------------

    async def _lease_once(self) -> None:
        await asyncio.sleep(self.config.lease_s / 3)
        for claim in list(self._opening.values()):
            await self.store.heartbeat(claim, self.config.lease_s)  # a loss shows at open
        now = time.monotonic()
        for flight in list(self.flights.values()):
            if now >= flight.deadline:
                limit = f"{self.config.job_timeout_s:.0f} s"
                await self._end(flight, Status.FAILED, "timeout", f"the job ran past {limit}")
                continue
            lease = await self.store.heartbeat(flight.claim, self.config.lease_s)
            if lease is Lease.LOST:
                log.warning("job.lease_lost", job_id=flight.job.id)
                self._forget(flight)
                self._settle()
            elif lease is Lease.CANCEL_REQUESTED:
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
            await self._finish(flight.claim, status, code, message)
        finally:
            self._settle()

    async def _finish(
        self, claim: Claim, status: Status, code: str | None, message: str | None
    ) -> None:
        try:
            # Shielded: a cancel of the caller must not leave the row half-written.
            job = await asyncio.shield(
                self.store.finish(claim, status, error_code=code, error_message=message)
            )
        except InvalidTransition:
            log.warning("job.lease_lost", job_id=claim.job.id)
            return
        except Exception:
            # A full disk, say: the row stays processing under a lease nobody
            # renews, so recovery requeues it and a re-run writes the end again
            # (its chunks are stored: it only re-reads the file). A retry, never
            # a failed job.
            log.exception("job.finish_failed", job_id=claim.job.id, status=status)
            return
        if job.status.finished:
            # The job's end and its webhook row are committed; nothing sent yet.
            crash_point("after_terminal_write", job.id)
        self._publish_end(job)

    def _publish_end(self, job: Job) -> None:
        kind = job.status.value if job.status.finished else "status"
        self.events.publish(
            job.id,
            kind,
            {"status": job.status.value, "error_code": job.error_code},
        )
        seconds = time.time() - job.started_at if job.started_at else None
        log.info(
            "job.finished",
            job_id=job.id,
            status=job.status,
            error=job.error_code,
            seconds=round(seconds, 3) if seconds else None,
        )


class _Done(Exception):
    """Nothing in flight, and nothing more to take: drained, or a burst is over."""


async def _wait(event: asyncio.Event, timeout_s: float) -> bool:
    try:
        await asyncio.wait_for(event.wait(), timeout_s)
    except TimeoutError:
        return False
    return True
