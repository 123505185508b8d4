"""What the worker may take on and what may run together: the claim rules
(the fair share, interactive requests first, a cap on jobs in flight), how
many rows the next step takes, whose jobs may be requeued at once (a dead
owner), who is blamed when the engine dies, and which steps may run beside
each other (a suspect runs alone).

Decisions only, over plain values: no store, no engine, no clock
(``tests/test_admission.py``). ``owner_is_dead`` asks the kernel whether a
process exists, and ``StepGate`` waits on the rule; nothing else here waits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Collection, Iterable
from dataclasses import dataclass

HOST = socket.gethostname()


@dataclass(frozen=True)
class Capacity:
    """How much a worker takes on: ``batch_size`` rows per step, ``parallel_steps``
    steps at once, ``max_jobs`` jobs in flight before only urgent ones get in."""

    batch_size: int
    parallel_steps: int
    max_jobs: int


def may_claim(in_flight: int, capacity: Capacity, *, stopping: bool) -> bool:
    """Whether to ask the store for a job at all: never while stopping, and
    never past twice ``max_jobs`` (the room urgent jobs get beyond it)."""
    return not stopping and in_flight < 2 * capacity.max_jobs


def min_priority(priorities: Collection[int], pooled: int, capacity: Capacity) -> int | None:
    """The least priority a job needs to be claimed now; None: any job.

    Any job gets in while fewer are in flight than a round of steps has rows
    (the fair share gives each a row at once: a clip behind a long job is
    claimed and decoded now), or while the pool (``pooled`` chunks) runs low.
    Past that, or at ``max_jobs``, only a job more urgent than every one in
    flight (an interactive request, C4) jumps in, and the rest stay queued for
    a less busy worker."""
    rows = capacity.batch_size * capacity.parallel_steps
    in_flight = len(priorities)
    hungry = pooled < 2 * capacity.batch_size or in_flight < rows
    if hungry and in_flight < capacity.max_jobs:
        return None
    return max(priorities, default=0) + 1


def step_size(capacity: Capacity, pooled: int, *, cutting: bool) -> int:
    """Rows for the next step: a full batch, except at the end of the work
    in flight. Once no job is still being cut (``cutting``) and the pool's
    ``pooled`` chunks no longer fill a batch for every parallel step, they are
    shared out among the steps: a job's last chunks decode side by side on
    every replica, instead of on one while the others idle (measured: about a
    tenth of a 6-minute file's time with steps of 4, docs/performance.md)."""
    if cutting:
        return capacity.batch_size
    shared = -(-pooled // capacity.parallel_steps)
    return max(1, min(capacity.batch_size, shared))


def owner_pid(worker_id: str, host: str = HOST) -> int | None:
    """The process id in ``worker_id`` (host:pid:nonce) when it names a process
    on ``host``; None for another host's worker or a malformed id."""
    owner_host, _, rest = worker_id.partition(":")
    pid_text = rest.partition(":")[0]
    if owner_host != host or not pid_text.isdigit():
        return None
    return int(pid_text)


def owner_is_dead(worker_id: str) -> bool:
    """True when ``worker_id`` names a process on this host that no longer runs,
    so its jobs can be requeued without waiting for the lease."""
    pid = owner_pid(worker_id)
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's process: alive
        return False
    return False


@dataclass(frozen=True)
class Held:
    """A job the engine held when it died, as the blame rule sees it."""

    job_id: str
    opened: bool  # opened in the engine (not still waiting for its model)
    suspect: bool  # it was in flight when the engine died before


def blamed(held: Iterable[Held], stepping: Collection[str], *, deliberate: bool) -> set[str]:
    """The jobs whose crash count a death of the engine raises. None when Sona
    killed the engine itself (``deliberate``). A suspect caught in its step
    (``stepping``: the jobs of the steps in flight; a suspect's runs alone)
    takes the blame alone; otherwise every job opened in the engine shares it."""
    if deliberate:
        return set()
    held = list(held)
    caught = {h.job_id for h in held if h.suspect} & set(stepping)
    return {h.job_id for h in held if h.opened and (not caught or h.job_id in caught)}


def may_start(alone: bool, running: int, *, solo_running: bool, solo_waiting: int) -> bool:
    """Whether a step may start: a suspect's (``alone``) once no step runs;
    any other while no suspect's step runs or waits to (it must not be
    overtaken)."""
    if alone:
        return running == 0
    return not solo_running and not solo_waiting


class StepGate:
    """The steps in flight, held to ``may_start``. A suspect's step goes in
    alone: it waits for the others to end, and no other starts until it has."""

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self._running = 0
        self._alone = False  # a suspect's step runs
        self._waiting_alone = 0

    def _may_start(self, alone: bool) -> bool:
        return may_start(
            alone, self._running, solo_running=self._alone, solo_waiting=self._waiting_alone
        )

    @contextlib.asynccontextmanager
    async def step(self, alone: bool) -> AsyncIterator[None]:
        async with self._cond:
            if alone:
                self._waiting_alone += 1
                try:
                    await self._cond.wait_for(lambda: self._may_start(True))
                finally:  # a cancelled wait must not hold the others back
                    self._waiting_alone -= 1
                    self._cond.notify_all()
            else:
                await self._cond.wait_for(lambda: self._may_start(False))
            self._running += 1
            self._alone = alone
        try:
            yield
        finally:
            async with self._cond:
                self._running -= 1
                self._alone = False
                self._cond.notify_all()
