"""Runs the engine in a child process (one per device) and talks to it over a
pipe: the ``EngineHost`` the worker and the model registry use.

A reader thread turns the child's messages into replies (futures) and events
(``events`` queue) on the event loop. When the child dies — a segfault, the
OOM killer, our own ``kill()`` — every pending request fails with
``EngineCrashed``, a ``Crashed`` event tells the worker, and a fresh child is
started with the same models loaded, so the daemon keeps serving. A child
that keeps dying young is restarted with growing pauses; what is sent
meanwhile waits for it. A model load past ``load_timeout_s`` (counted from the
request, a fresh child's start included) is a hung child: it is killed, and
restarts like a crashed one.

The host pings the child's command thread every ``ping_interval_s``; a ping
left unanswered past ``ping_timeout_s`` (a SIGSTOP, a wedged process) shows in
``silent_s``, so ``/ready`` says so long before a step would time out. While
the command thread loads a model it answers nothing: the load timeout covers
that time instead.

The child starts on first use: a daemon that never transcribes never pays
for one."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import signal
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import structlog

from sona.engine import ChunkInfo, Crashed, Detection, EngineConfig, EngineEvent, JobSpec
from sona.engine.entry import main
from sona.engine.messages import (
    Close,
    Detect,
    Load,
    Open,
    Ping,
    Pong,
    Reply,
    Step,
    Transcribe,
    Unload,
)
from sona.errors import EngineCrashed, from_code
from sona.jobs import Segment, TranscribeOptions

log = structlog.get_logger("sona.engine")
STOP_GRACE_S = 3.0
YOUNG_S = 10.0  # a child that dies younger than this is restarted after a pause
MAX_PAUSE_S = 30.0


class ProcessEngineHost:
    """``EngineHost`` over a ``multiprocessing`` child (spawned, never forked:
    the daemon has threads and an event loop a fork would copy half-alive)."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.events: asyncio.Queue[EngineEvent] = asyncio.Queue()
        self._models: dict[str, Path] = {}  # what a restarted child must load again
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count()
        self._proc: BaseProcess | None = None
        self._conn: Connection | None = None  # None: no live child (yet, or for now)
        self._backlog: list[object] = []  # sent while no child was up
        self._generation = 1  # of the child that runs, or will run next
        self._started_at = 0.0
        self._pause_s = 0.0
        self._restarts = 0
        self._killing = False  # the next death is ours, not a crash
        self._stopped = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader: threading.Thread | None = None
        self._loads: set[int] = set()  # requests of the model loads under way
        self._stepping: list[frozenset[str]] = []  # the jobs of each step in flight
        self._ping_sent: float | None = None  # the unanswered ping's time
        self._pinger: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def restarts(self) -> int:
        return self._restarts

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def silent_s(self) -> float | None:
        if self._ping_sent is None or self._loads:
            return None
        silent = time.monotonic() - self._ping_sent
        return silent if silent > self.config.ping_timeout_s else None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._pinger = asyncio.create_task(self._ping_forever())

    async def _ping_forever(self) -> None:
        """One ping out at a time, to a child that is up; never one to start it."""
        while True:
            await asyncio.sleep(self.config.ping_interval_s)
            if self._conn is not None and self._ping_sent is None:
                self._ping_sent = time.monotonic()
                self._post(Ping())

    def _spawn(self) -> None:
        if self._stopped:
            return
        ctx = multiprocessing.get_context("spawn")
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=main, args=(theirs, self.config), name="sona-engine", daemon=True)
        proc.start()
        theirs.close()
        self._proc, self._conn = proc, ours
        self._started_at = time.monotonic()
        self._reader = threading.Thread(
            target=self._read,
            args=(ours, proc, self._generation),
            name="sona-engine-reader",
            daemon=True,
        )
        self._reader.start()
        # The child runs these first: later commands find their models loaded.
        backlog, self._backlog = self._backlog, []
        for msg in [*(Load(next(self._ids), m, p) for m, p in self._models.items()), *backlog]:
            self._post(msg)
        log.info("engine.started", pid=proc.pid, generation=self._generation)

    def _read(self, conn: Connection, proc: BaseProcess, generation: int) -> None:
        """Reader thread: forward every message, then report the child's death."""
        assert self._loop is not None
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break
            try:
                self._loop.call_soon_threadsafe(self._on_message, generation, msg)
            except RuntimeError:  # the loop closed: Sona is exiting
                break
        proc.join()
        conn.close()
        with contextlib.suppress(RuntimeError):  # the loop closed: Sona is exiting
            self._loop.call_soon_threadsafe(self._on_exit, generation, proc.exitcode)

    def _on_message(self, generation: int, msg: Any) -> None:
        if generation != self._generation:
            return
        if isinstance(msg, Pong):
            self._ping_sent = None
        elif isinstance(msg, Reply):
            if msg.req in self._loads:
                self._loads.discard(msg.req)
                if self._ping_sent is not None:  # it waited behind the load
                    self._ping_sent = time.monotonic()
            fut = self._pending.pop(msg.req, None)
            if fut is None or fut.done():
                if msg.error:  # a model reload after a restart failed
                    log.error("engine.reload_failed", code=msg.error[0], message=msg.error[1])
                return
            if msg.error:
                fut.set_exception(from_code(*msg.error))
            else:
                fut.set_result(msg.value)
        else:
            self.events.put_nowait(msg)

    def _on_exit(self, generation: int, exitcode: int | None) -> None:
        if generation != self._generation or self._stopped:
            return
        reason = _describe(exitcode)
        deliberate, self._killing = self._killing, False
        self._generation += 1  # what is opened from now on goes to the next child
        self._conn = None
        self._ping_sent = None
        self._loads.clear()
        stepping = frozenset().union(*self._stepping)
        for fut in self._pending.values():
            if not fut.done():
                message = f"the engine process died ({reason})"
                fut.set_exception(EngineCrashed(message, deliberate=deliberate))
        self._pending.clear()
        self._restarts += 1
        young = time.monotonic() - self._started_at < YOUNG_S and not deliberate
        self._pause_s = min(max(0.5, self._pause_s * 2), MAX_PAUSE_S) if young else 0.0
        (log.info if deliberate else log.error)(
            "engine.exited", reason=reason, restart_in_s=self._pause_s
        )
        self.events.put_nowait(Crashed(reason, deliberate=deliberate, stepping=stepping))
        assert self._loop is not None
        self._loop.call_later(self._pause_s, self._spawn)

    def _post(self, msg: object) -> None:
        if isinstance(msg, Load):
            self._loads.add(msg.req)
        if self._proc is None:
            self._spawn()  # first use
        if self._conn is None:
            self._backlog.append(msg)  # between two children
            return
        with contextlib.suppress(OSError):  # a dying child: _on_exit fails the waiters
            self._conn.send(msg)

    async def _call(self, make: Any) -> Any:
        req = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[req] = fut
        self._post(make(req))
        return await fut

    async def load(self, model_id: str, path: Path) -> None:
        timeout = self.config.load_timeout_s
        try:
            await asyncio.wait_for(self._call(lambda req: Load(req, model_id, path)), timeout)
        except TimeoutError:
            log.error("engine.load_hung", model=model_id, timeout_s=timeout)
            await self.kill()  # the jobs in flight are requeued, not blamed
            raise EngineCrashed(
                f"the engine hung loading model {model_id} (over {timeout:g} s) and was restarted"
            ) from None
        self._models[model_id] = path

    async def unload(self, model_id: str) -> None:
        self._models.pop(model_id, None)
        await self._call(lambda req: Unload(req, model_id))

    def open(self, spec: JobSpec) -> None:
        self._post(Open(spec))

    async def detect_language(
        self, model_id: str, path: Path, max_seconds: float
    ) -> Detection | None:
        found: Detection | None = await self._call(
            lambda req: Detect(req, model_id, path, max_seconds)
        )
        return found

    def close(self, job_id: str) -> None:
        self._post(Close(job_id))

    async def transcribe(
        self, model_id: str, options: TranscribeOptions, audio: Any
    ) -> tuple[str | None, list[Segment]]:
        result: tuple[str | None, list[Segment]] = await self._call(
            lambda req: Transcribe(req, model_id, options, audio)
        )
        return result

    async def step(self, model_id: str, items: list[ChunkInfo]) -> list[list[Segment]]:
        jobs = frozenset(i.job_id for i in items)
        self._stepping.append(jobs)  # whom to blame if the child dies meanwhile
        try:
            result: list[list[Segment]] = await self._call(lambda req: Step(req, model_id, items))
        finally:
            self._stepping.remove(jobs)
        return result

    async def kill(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._killing = True
            self._proc.kill()

    async def stop(self) -> None:
        self._stopped = True
        if self._pinger is not None:
            self._pinger.cancel()
        proc = self._proc
        if proc is None:
            return
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.send(None)
        await asyncio.to_thread(proc.join, STOP_GRACE_S)
        if proc.is_alive():
            proc.kill()
            await asyncio.to_thread(proc.join)
        if self._reader is not None:
            await asyncio.to_thread(self._reader.join)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(EngineCrashed("the engine was stopped"))
        log.info("engine.stopped", pid=proc.pid)


def _describe(exitcode: int | None) -> str:
    if exitcode is None:
        return "unknown"
    if exitcode < 0:
        try:
            return f"signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"
