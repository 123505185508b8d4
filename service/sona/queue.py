"""The service layer: admit, cancel, follow and wait on jobs, over a ``Runtime``.

What the HTTP routes (``api/*``), the CLI's in-process path (``sona transcribe``)
and anything else that submits work call, so that waking a worker after a job is
queued, telling a worker to stop a cancelled job, and following a job until it
finishes exist once. No HTTP knowledge here: a caller that can go away says so
through ``gone``; domain errors (``Busy``…) are raised, and ``api/errors.py``
maps them to statuses."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Protocol

from sona.errors import Busy
from sona.events import POLL_S, TERMINAL, EventHub, JobUpdate, follow
from sona.intake import Intake, Submission
from sona.jobs import Job, Status
from sona.notify import Notifier
from sona.store import JobStore
from sona.uploads import StoredUpload


class Waker(Protocol):
    def wake(self) -> None: ...


class Runtime(Protocol):
    """What this layer uses of ``sona.runtime.Runtime``, which satisfies it: the
    service layer sits below the composition root and cannot import it."""

    @property
    def store(self) -> JobStore: ...
    @property
    def events(self) -> EventHub: ...
    @property
    def intake(self) -> Intake: ...
    @property
    def notifier(self) -> Notifier: ...
    @property
    def webhooks(self) -> Waker: ...  # the dispatcher: a cancelled job's webhook is due


async def admit(rt: Runtime, upload: StoredUpload, sub: Submission) -> tuple[Job, bool]:
    """Queue the job and wake a worker (here or on any node); every submitting
    path goes through here."""
    job, created = await rt.intake.admit(upload, sub)
    if created:
        await announce(rt.notifier, job.id)
    return job, created


async def announce(notifier: Notifier, job_id: str) -> None:
    """Wake a worker (here or on any node) for a queued job: one admitted, or
    one the store queued itself (a live session's second pass)."""
    await notifier.job_queued(job_id)


async def cancel(rt: Runtime, job_id: str) -> Job:
    """Cancel through the store, and tell the worker running the job, on this node
    or another, to stop it now (the store flag reaches it anyway, a little later)."""
    job = await rt.store.cancel(job_id)
    if job.status == Status.CANCELLED:
        rt.webhooks.wake()  # a queued job's webhook is due now
    if job.status == Status.PROCESSING:
        await rt.notifier.cancel_requested(job_id)
        job = await rt.store.get(job_id)
    return job


async def abandon(rt: Runtime, job_id: str) -> None:
    """Cancel the job unless it finished: the caller went away or failed."""
    if not (await rt.store.get(job_id)).status.finished:
        await cancel(rt, job_id)


def updates(
    rt: Runtime, job_id: str, *, after: int = -1, poll_s: float = POLL_S
) -> AsyncGenerator[JobUpdate, None]:
    """``events.follow`` over the runtime's store and hub: the job's updates until
    it finishes. Use it inside ``contextlib.aclosing``."""
    return follow(rt.store, rt.events, job_id, after=after, poll_s=poll_s)


async def wait(
    rt: Runtime,
    job: Job,
    timeout_s: float | None = None,
    on_update: Callable[[Job], None] | None = None,
) -> Job:
    """``job`` once it has finished, or as it is after ``timeout_s`` (None: no
    limit); ``on_update`` sees the job at every update on the way."""
    # Segments already stored are skipped: only the status matters here.
    followed = updates(rt, job.id, after=job.segments_done - 1)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s), contextlib.aclosing(followed):
            async for update in followed:
                if on_update is not None:
                    on_update(update.job)
                if update.type in TERMINAL:
                    return update.job
    return await rt.store.get(job.id)


async def claimed(
    followed: AsyncIterator[JobUpdate], wait_s: float, gone: Callable[[], bool]
) -> AsyncGenerator[JobUpdate, None]:
    """The job's updates from the moment the worker takes it. Raises Busy (429)
    when that takes longer than ``wait_s`` (C4), and ConnectionResetError
    once ``gone()`` says the caller has gone (checked at least every poll interval)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    async for update in followed:
        if gone():
            raise ConnectionResetError("client disconnected")
        if update.job.status == Status.QUEUED:
            if loop.time() >= deadline:
                raise Busy("the server is busy; try again shortly", retry_after=5)
        elif update.type != "idle":
            yield update
