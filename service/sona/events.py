"""Job events: the in-process hub the worker publishes to, and ``follow``,
which turns a job's stored state into a stream of updates.

The hub only makes followers prompt: they wake the moment the worker stores
something. The database stays the source of truth, so a follower that
connects late or reconnects replays from the store, and one whose worker runs
in another process still sees everything, a poll interval later. With a
shared store the hub's ``relay`` (``notify.py``) tells the other nodes, and
what they tell arrives through ``deliver``, so followers on an API node wake
as promptly for a worker on another machine."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sona.jobs import Job, Segment
from sona.store import JobStore
from sona.wire import FINISHED

POLL_S = 1.0
# Event types: status, progress, segment, completed, failed, cancelled.
TERMINAL = FINISHED  # the event types of a job's end are its final statuses


@dataclass(frozen=True)
class JobEvent:
    job_id: str
    type: str
    data: dict[str, Any]


class EventHub:
    """Followers of one job (``subscribe``) and of any job (``wakeups``) get a
    wake-up flag, not a queue: however many events land while a follower is
    busy or its client reads slowly, what it holds stays one flag (they read
    the store anyway). ``subscribe_all`` hands out the events themselves, for
    in-process consumers that never stop reading (metrics, the webhook wake)."""

    def __init__(self) -> None:
        self._subs: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._wakes: set[asyncio.Event] = set()
        self._all: set[asyncio.Queue[JobEvent]] = set()
        # Told (job id, type) of every event published here: the other nodes'.
        self.relay: Callable[[str, str], None] = lambda job_id, type_: None

    @contextmanager
    def subscribe(self, job_id: str) -> Iterator[asyncio.Event]:
        """A flag set by each of ``job_id``'s events; the follower clears it."""
        wake = asyncio.Event()
        self._subs[job_id].add(wake)
        try:
            yield wake
        finally:
            self._subs[job_id].discard(wake)
            if not self._subs[job_id]:
                del self._subs[job_id]

    @contextmanager
    def wakeups(self) -> Iterator[asyncio.Event]:
        """A flag set by every job's events (the all-jobs feed's one reader)."""
        wake = asyncio.Event()
        self._wakes.add(wake)
        try:
            yield wake
        finally:
            self._wakes.discard(wake)

    @contextmanager
    def subscribe_all(self) -> Iterator[asyncio.Queue[JobEvent]]:
        """Every job's events, in order, for consumers that read them at once."""
        queue: asyncio.Queue[JobEvent] = asyncio.Queue()
        self._all.add(queue)
        try:
            yield queue
        finally:
            self._all.discard(queue)

    def publish(self, job_id: str, type_: str, data: dict[str, Any]) -> None:
        self.deliver(job_id, type_, data)
        self.relay(job_id, type_)

    def deliver(self, job_id: str, type_: str, data: dict[str, Any] | None = None) -> None:
        """To this process's subscribers only; events from other nodes come with
        no data (followers read the store)."""
        for wake in (*self._subs.get(job_id, ()), *self._wakes):
            wake.set()
        if self._all:
            event = JobEvent(job_id, type_, data or {})
            for queue in self._all:
                queue.put_nowait(event)


@dataclass(frozen=True)
class JobUpdate:
    """One step of a followed job.

    ``type`` is ``status`` | ``progress`` | ``segment`` | ``idle`` | ``completed`` |
    ``failed`` | ``cancelled``. ``job`` is the job as last read from the store;
    ``segment`` is set for ``segment`` updates only. ``idle`` means a poll interval
    passed with no wake-up: consumers may ignore it, or use it to send keep-alives
    and to notice that their client has gone."""

    type: str
    job: Job
    segment: Segment | None = None


def _progress_key(job: Job) -> tuple[float, float | None, int]:
    return (job.processed_seconds, job.duration, job.segments_done)


async def wait_wake(wake: asyncio.Event, timeout_s: float) -> bool:
    """True when ``wake`` was set within ``timeout_s`` (and clears it): one or
    many events meanwhile, they are only wake-ups, as the store is read next."""
    try:
        await asyncio.wait_for(wake.wait(), timeout_s)
    except TimeoutError:
        return False
    wake.clear()
    return True


async def follow(
    store: JobStore, hub: EventHub, job_id: str, *, after: int = -1, poll_s: float = POLL_S
) -> AsyncGenerator[JobUpdate, None]:
    """Follow ``job_id`` until it finishes.

    Yields ``status`` (the job as it is now) first, then every stored segment with
    index > ``after`` in order, each exactly once, interleaved with ``status`` on a
    status change, ``progress`` when processed seconds, duration or segment count
    change, and ``idle`` after each quiet poll interval; last the terminal update
    (``completed``/``failed``/``cancelled``), after all segments, and then stops.
    Raises ``NotFound`` on the first step for an unknown job. Use it inside
    ``contextlib.aclosing`` so the hub subscription ends when the consumer stops."""
    # Subscribe before the first read: a write between the read and the
    # subscription would otherwise go unnoticed until the next poll.
    with hub.subscribe(job_id) as wake:
        job = await store.get(job_id)
        yield JobUpdate("status", job)
        status, progress = job.status, _progress_key(job)
        while True:
            # The job is read before its segments: once it reads finished, every
            # segment is already stored, so the terminal update comes last.
            for seg in await store.segments(job_id, after=after):
                after = seg.index
                yield JobUpdate("segment", job, seg)
            if job.status.finished:
                yield JobUpdate(job.status.value, job)
                return
            if job.status != status:
                yield JobUpdate("status", job)
            elif _progress_key(job) != progress:
                yield JobUpdate("progress", job)
            status, progress = job.status, _progress_key(job)
            if not await wait_wake(wake, poll_s):
                yield JobUpdate("idle", job)
            job = await store.get(job_id)
