"""The all-jobs feed (I2): ``GET /v1/events``, Server-Sent Events for the whole
queue, which the dashboard at ``/`` lives on.

It sends state, not deltas. The store is the source of truth: ``watch`` reads
the newest jobs plus every queued and processing one, and sends each job whose
object (A2) differs from what this connection last sent. It reads again when the
in-process ``EventHub`` wakes it (any job's event) or after a poll interval, so
it is correct without the hub too: a worker in another process publishes
nothing here, and its progress still arrives within ``POLL_S``.

Wire format:

* ``snapshot``  ``{"jobs": [job, ...], "state": {...}, "last_event_id"}``: first
  on every connection; it replaces whatever the client held
* ``job``       a job object, when a job in view is new or changed (also its
  last change as it leaves the view: finished beyond the newest, or pushed out)
* ``removed``   ``{"id"}``, when a job in view was deleted (retention)
* ``state``     ``{"models", "queue_size", "processing", "worker_running", "role"}``
  when it changes

Every frame carries an ``id:`` (milliseconds since the epoch, increasing), so
browsers reconnect with ``Last-Event-ID``. The server keeps no log to replay
from: whatever the id, a reconnecting client gets a fresh ``snapshot`` (the id
it sent is echoed back as ``last_event_id``), so it misses nothing, across a
daemon restart too. ``retry: 2000`` asks clients to reconnect after 2 s, and a
``: ping`` comment goes out after ``HEARTBEAT_S`` of silence."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web

from sona.api.job_events import open_sse, sse_frame
from sona.api.models import model_out
from sona.api.schemas import job_out
from sona.errors import NotFound
from sona.events import EventHub, wait_wake
from sona.jobs import Job, Status
from sona.keys import EVENTS, FEEDS_STOP, MODELS, STORE, WORKER
from sona.store import JobStore

log = structlog.get_logger("sona.api")
routes = web.RouteTableDef()

WINDOW = 50  # newest jobs always in view, whatever their status
ACTIVE_MAX = 200  # queued and processing jobs in view beyond the window, each
POLL_S = 1.0
SETTLE_S = 0.1  # after a wake-up, let a burst of events (segments) land first
HEARTBEAT_S = 15.0
RETRY_MS = 2000

StateReader = Callable[[], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class FeedUpdate:
    """One step of the feed: ``type`` is ``snapshot`` | ``job`` | ``removed`` |
    ``state`` | ``idle`` (a quiet poll interval: nothing to send)."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)


async def jobs_in_view(store: JobStore, window: int = WINDOW) -> list[Job]:
    """The newest ``window`` jobs and every active one (up to ``ACTIVE_MAX`` per
    status), newest first, each once."""
    newest, _ = await store.list_jobs(status=None, limit=window, before=None)
    seen = {job.id: job for job in newest}
    for status in (Status.PROCESSING, Status.QUEUED):
        active, _ = await store.list_jobs(status=status, limit=ACTIVE_MAX, before=None)
        for job in active:
            seen.setdefault(job.id, job)
    return sorted(seen.values(), key=lambda j: j.created_at, reverse=True)


async def _departed(store: JobStore, sent: dict[str, dict[str, Any]]) -> list[FeedUpdate]:
    """Updates for jobs that left the view: ``removed`` for those deleted, and
    the last change of the others, which left because newer jobs pushed them out
    or because they finished beyond the window. Finished jobs never change
    again, so they need no more watching."""
    updates = []
    for job_id, before in sent.items():
        try:
            out = job_out(await store.get(job_id))
        except NotFound:
            updates.append(FeedUpdate("removed", {"id": job_id}))
            continue
        if out != before:
            updates.append(FeedUpdate("job", out))
    return updates


async def _read(
    store: JobStore, read_state: StateReader, window: int
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The job objects in view by id (newest first) and the state."""
    jobs = await jobs_in_view(store, window)
    state = await read_state()
    state["processing"] = sum(job.status == Status.PROCESSING for job in jobs)
    return {job.id: job_out(job) for job in jobs}, state


async def watch(
    store: JobStore,
    hub: EventHub,
    read_state: StateReader,
    *,
    last_event_id: str | None = None,
    poll_s: float = POLL_S,
    window: int = WINDOW,
) -> AsyncGenerator[FeedUpdate, None]:
    """Follow the whole queue forever: a ``snapshot`` first, then ``job``,
    ``removed`` and ``state`` updates as the store changes, and ``idle`` after
    each read that found nothing new (so the consumer gets a turn at least
    every ``poll_s``). Use it inside ``contextlib.aclosing``."""
    # Subscribe before the first read, so no write falls between the two.
    with hub.subscribe_all() as inbox:
        sent, state = await _read(store, read_state, window)
        snapshot = {"jobs": list(sent.values()), "state": state, "last_event_id": last_event_id}
        yield FeedUpdate("snapshot", snapshot)
        while True:
            await wait_wake(inbox, poll_s, settle_s=SETTLE_S)
            changed = False
            current, new_state = await _read(store, read_state, window)
            gone = {job_id: out for job_id, out in sent.items() if job_id not in current}
            for update in await _departed(store, gone):
                changed = True
                yield update
            # Oldest first, so a client that appends shows new jobs in order.
            for job_id, out in reversed(current.items()):
                if sent.get(job_id) != out:
                    changed = True
                    yield FeedUpdate("job", out)
            sent = current
            if new_state != state:
                changed = True
                state = new_state
                yield FeedUpdate("state", state)
            if not changed:
                yield FeedUpdate("idle")


def app_state(app: web.Application) -> StateReader:
    """What this daemon has loaded and is doing, for the ``state`` object
    (``watch`` adds the count of processing jobs from its own read)."""

    async def read() -> dict[str, Any]:
        return {
            "models": [model_out(e).model_dump(mode="json") for e in app[MODELS].entries()],
            "queue_size": await app[STORE].queue_size(),
            "worker_running": (worker := app[WORKER]) is not None and worker.running,
            # "api": this node runs no worker (--no-worker); workers run elsewhere.
            "role": "api+worker" if worker is not None else "api",
        }

    return read


class _EventIds:
    """Frame ids: milliseconds since the epoch, strictly increasing, so they also
    order across a daemon restart (as far as the clock does)."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last = max(self._last + 1, int(time.time() * 1000))
        return self._last


def setup(app: web.Application) -> None:
    """Feeds never end by themselves: end them when the daemon shuts down (after
    the drain, so clients see where the running job ended up), rather than
    holding the shutdown until aiohttp's timeout cancels them."""
    stop = app[FEEDS_STOP] = asyncio.Event()

    async def on_shutdown(app: web.Application) -> None:
        stop.set()

    app.on_shutdown.append(on_shutdown)


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


@routes.get("/v1/events", allow_head=False)  # HEAD would open the stream
async def all_events(request: web.Request) -> web.StreamResponse:
    app = request.app
    last_id = request.headers.get("Last-Event-ID", "").strip()[:64] or None
    updates = watch(app[STORE], app[EVENTS], app_state(app), last_event_id=last_id)
    async with contextlib.aclosing(updates):
        first = await anext(updates)  # read before answering: a store error stays a 5xx
        resp = await open_sse(request)
        ids = _EventIds()
        loop = asyncio.get_running_loop()
        try:
            await resp.write(f"retry: {RETRY_MS}\n".encode())
            await resp.write(sse_frame(first.type, first.data, ids.next()))
            last_sent = loop.time()
            async for update in updates:
                if app[FEEDS_STOP].is_set():
                    break
                if _gone(request):
                    raise ConnectionResetError("client disconnected")
                if update.type != "idle":
                    await resp.write(sse_frame(update.type, update.data, ids.next()))
                    last_sent = loop.time()
                elif loop.time() - last_sent >= HEARTBEAT_S:
                    await resp.write(b": ping\n\n")
                    last_sent = loop.time()
        except ConnectionResetError:
            log.debug("feed.client_gone")
            return resp
    with contextlib.suppress(ConnectionResetError):
        await resp.write_eof()
    return resp


__all__ = ["FeedUpdate", "app_state", "jobs_in_view", "routes", "setup", "watch"]
