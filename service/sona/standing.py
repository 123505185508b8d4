"""Where a job stands: its place in the queue and an estimate of when it ends.

Estimates, not promises. The rate is measured, not assumed: ``Throughput``
counts the seconds of audio a worker gets through per wall-clock second while
it has work (its recent past only, so a busy machine shows as one). A job in
flight shares the rows with the others in flight (the batcher's fair share),
so it ends once every job in flight has had as much decoded as this one has
left, or all it has left itself when that is less (processor sharing). A
queued job waits for the jobs in flight and the queued ones claimed before
it. Unknown is ``None``: no worker in this process (an API node), no work
measured yet, or a job whose duration is not known."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from sona.jobs import Job, Status
from sona.store import JobStore

IN_FLIGHT_MAX = 1000  # processing jobs read for an estimate: more than any fleet holds


@dataclass(frozen=True)
class Standing:
    """``position``: a queued job's place, 1 the next to be claimed; ``eta_s``:
    seconds until it should be finished. ``None``: not known, or not
    applicable (a processing job has no place; a finished one neither)."""

    position: int | None = None
    eta_s: float | None = None


class Throughput:
    """Seconds of audio processed per wall-clock second of work (time with at
    least one job in flight), over about the last ``window_s`` seconds of work.
    The worker reports its busy spells and every stored chunk's progress."""

    def __init__(self, window_s: float = 300.0, least_s: float = 5.0) -> None:
        self._window_s = window_s
        self._least_s = least_s  # less work than this measured: no rate yet
        self._busy_s = 0.0  # busy time before the current spell
        self._since: float | None = None  # start of the current busy spell
        self._audio_s = 0.0
        self._marks: deque[tuple[float, float]] = deque([(0.0, 0.0)])  # (busy, audio) totals

    def _busy(self, now: float) -> float:
        return self._busy_s + (now - self._since if self._since is not None else 0.0)

    def set_busy(self, now: float, busy: bool) -> None:
        if busy and self._since is None:
            self._since = now
        elif not busy and self._since is not None:
            self._busy_s += now - self._since
            self._since = None

    def add(self, now: float, audio_s: float) -> None:
        """``audio_s`` more seconds of some job's audio were processed."""
        self._audio_s += max(audio_s, 0.0)
        busy = self._busy(now)
        self._marks.append((busy, self._audio_s))
        while len(self._marks) > 2 and busy - self._marks[1][0] >= self._window_s:
            self._marks.popleft()

    def rate(self, now: float) -> float | None:
        """Audio seconds per wall second, or ``None`` before enough was measured.
        Measured up to ``now``, so a stall lowers it."""
        busy0, audio0 = self._marks[0]
        busy = self._busy(now)
        if busy - busy0 < self._least_s or self._audio_s <= audio0:
            return None
        return (self._audio_s - audio0) / (busy - busy0)


def left(job: Job) -> float | None:
    """Seconds of the job's audio still to process; ``None`` when its length is unknown."""
    if job.duration is None:
        return None
    return max(job.duration - job.processed_seconds, 0.0)


def rounded(seconds: float) -> float:
    """Two significant figures (at least whole seconds): an estimate should not
    pretend to more, and it changes less often in the dashboard's feed."""
    if seconds < 10:
        return float(round(seconds))
    digits = len(str(int(seconds))) - 2
    return float(round(seconds, -digits))


def eta_in_flight(own_left: float, others_left: list[float], rate: float) -> float:
    """Processor sharing: this job ends once each job in flight has had
    min(its own left, this one's left) decoded."""
    return rounded((own_left + sum(min(o, own_left) for o in others_left)) / rate)


def eta_queued(own: float, ahead_s: float, in_flight_left: list[float], rate: float) -> float:
    """Everything in flight and queued before it, then the job itself."""
    return rounded((own + ahead_s + sum(in_flight_left)) / rate)


async def standings(store: JobStore, jobs: list[Job], rate: float | None) -> dict[str, Standing]:
    """The standing of each queued or processing job of ``jobs`` (others get none)."""
    active = [j for j in jobs if j.status in (Status.QUEUED, Status.PROCESSING)]
    if not active:
        return {}
    flying, _ = await store.list_jobs(status=Status.PROCESSING, limit=IN_FLIGHT_MAX, before=None)
    out = {}
    for job in active:
        own = left(job)
        others = [s for j in flying if j.id != job.id and (s := left(j)) is not None]
        if job.status == Status.PROCESSING:
            eta = None if own is None or rate is None else eta_in_flight(own, others, rate)
            out[job.id] = Standing(None, eta)
            continue
        count, ahead_s = await store.queue_ahead(job)
        eta = None if own is None or rate is None else eta_queued(own, ahead_s, others, rate)
        out[job.id] = Standing(count + 1, eta)
    return out
