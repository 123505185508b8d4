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
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web

from sona.api.job_requests import throughput
from sona.api.schemas import job_out, model_out
from sona.api.sse import gone, open_sse, sse_frame
from sona.errors import NotFound
from sona.events import EventHub, wait_wake
from sona.jobs import Job, Status
from sona.keys import EVENTS, MODELS, STORE, WORKER
from sona.standing import standings
from sona.store import JobStore

log = structlog.get_logger("sona.api")
routes = web.RouteTableDef()

WINDOW = 50  # newest jobs always in view, whatever their status
ACTIVE_MAX = 200  # queued and processing jobs in view beyond the window, each
POLL_S = 1.0
SETTLE_S = 0.1  # after a wake-up, let a burst of events (segments) land first
HEARTBEAT_S = 15.0  # a ": ping" after this long with nothing to send
# A client that takes no frame for this long has fallen behind: it is sent a
# ``reconnect`` event (given DROP_GRACE_S to take it) and the stream ends.
SEND_TIMEOUT_S = 30.0
DROP_GRACE_S = 5.0
RETRY_MS = 2000

StateReader = Callable[[], Awaitable[dict[str, Any]]]
RateReader = Callable[[], float | None]  # a worker's measured throughput, for the ETAs


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
    store: JobStore, read_state: StateReader, window: int, rate: RateReader
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The job objects in view by id (newest first), queued and processing ones
    with their standing, and the state."""
    jobs = await jobs_in_view(store, window)
    state = await read_state()
    state["processing"] = sum(job.status == Status.PROCESSING for job in jobs)
    where = await standings(store, jobs, rate())
    return {job.id: job_out(job, where.get(job.id)) for job in jobs}, state


class FeedSource:
    """The feed's one reader of the store, shared by every stream.

    While at least one stream listens, it reads the view when the hub wakes it
    (after ``SETTLE_S``, so a burst of events is one read) or after ``poll_s``,
    and wakes the streams only when what it read changed. An idle stream so
    costs nothing but its heartbeat timer: 200 idle streams mean one read a
    second, not 200. Each stream holds a flag and a reference to the view it
    last sent (shared with the others), never a queue."""

    def __init__(
        self,
        store: JobStore,
        hub: EventHub,
        read_state: StateReader,
        *,
        poll_s: float = POLL_S,
        window: int = WINDOW,
        rate: RateReader = lambda: None,
    ) -> None:
        self.store = store
        self.hub = hub
        self.read_state = read_state
        self.rate = rate
        self.poll_s = poll_s
        self.window = window
        self.send_timeout_s = SEND_TIMEOUT_S
        self.drop_grace_s = DROP_GRACE_S
        self.view: tuple[dict[str, dict[str, Any]], dict[str, Any]] = ({}, {})
        self.polls = 0  # the poller's reads of the store (tests count them)
        self.wakes = 0  # streams woken to compare the view
        self.dropped = 0  # streams dropped for falling behind
        self.closed = False
        self._streams: set[asyncio.Event] = set()
        self._fresh: set[asyncio.Event] = set()  # joined since the last read
        self._poller: asyncio.Task[None] | None = None

    @property
    def listeners(self) -> int:
        return len(self._streams)

    async def read(self) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        return await _read(self.store, self.read_state, self.window, self.rate)

    @contextlib.contextmanager
    def listen(self) -> Iterator[asyncio.Event]:
        """A stream's wake-up flag, set after a read that changed the view, and
        after the first read once it joined (its snapshot may be newer than the
        view it will be compared with)."""
        wake = asyncio.Event()
        self._streams.add(wake)
        self._fresh.add(wake)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll(), name="sona-feed-poll")
        try:
            yield wake
        finally:
            self._streams.discard(wake)
            self._fresh.discard(wake)

    def close(self) -> None:
        """Every stream wakes and ends (the daemon is stopping)."""
        self.closed = True
        for wake in self._streams:
            wake.set()

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller

    async def _poll(self) -> None:
        with self.hub.wakeups() as woken:
            while self._streams and not self.closed:
                if await wait_wake(woken, self.poll_s):
                    await asyncio.sleep(SETTLE_S)
                    woken.clear()
                try:
                    view = await self.read()
                except Exception:  # the store is down: try again next interval
                    log.warning("feed.read_failed", exc_info=True)
                    continue
                self.polls += 1
                changed, self.view = view != self.view, view
                for wake in self._streams if changed else self._fresh:
                    wake.set()
                self._fresh.clear()


async def watch(
    source: FeedSource, *, last_event_id: str | None = None, idle_s: float = HEARTBEAT_S
) -> AsyncGenerator[FeedUpdate, None]:
    """Follow the whole queue until the source closes: a ``snapshot`` first,
    then ``job``, ``removed`` and ``state`` updates as the store changes, and
    ``idle`` after ``idle_s`` with nothing to send. Use it inside
    ``contextlib.aclosing``."""
    # Listen before the snapshot's read, so no change falls between the two.
    with source.listen() as wake:
        sent, state = await source.read()
        snapshot = {"jobs": list(sent.values()), "state": state, "last_event_id": last_event_id}
        yield FeedUpdate("snapshot", snapshot)
        while not source.closed:
            if not await wait_wake(wake, idle_s):
                yield FeedUpdate("idle")
                continue
            if source.closed:
                return
            source.wakes += 1
            current, new_state = source.view
            gone = {job_id: out for job_id, out in sent.items() if job_id not in current}
            for update in await _departed(source.store, gone):
                yield update
            # Oldest first, so a client that appends shows new jobs in order.
            for job_id, out in reversed(current.items()):
                if sent.get(job_id) != out:
                    yield FeedUpdate("job", out)
            sent = current
            if new_state != state:
                state = new_state
                yield FeedUpdate("state", state)


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


FEED = web.AppKey("feed", FeedSource)


def setup(app: web.Application) -> None:
    """One feed source per app, made once the runtime (store, hub) is up.
    Feeds never end by themselves: end them when the daemon shuts down (after
    the drain, so clients see where the running job ended up), rather than
    holding the shutdown until aiohttp's timeout cancels them."""

    async def on_startup(app: web.Application) -> None:
        app[FEED] = FeedSource(
            app[STORE], app[EVENTS], app_state(app), rate=lambda: throughput(app)
        )

    async def on_shutdown(app: web.Application) -> None:
        if FEED in app:
            app[FEED].close()

    async def on_cleanup(app: web.Application) -> None:
        if FEED in app:
            await app[FEED].stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.insert(0, on_cleanup)  # before the runtime (the store) goes


class _Behind(Exception):
    """The client did not take a frame within the source's ``send_timeout_s``."""


async def _send(resp: web.StreamResponse, data: bytes, timeout_s: float) -> None:
    """Write ``data``. aiohttp waits for the client once its buffer is past
    64 KiB, so a client that reads too slowly holds at most that and one frame
    here; past ``timeout_s`` of waiting it is behind."""
    try:
        async with asyncio.timeout(timeout_s):
            await resp.write(data)
    except TimeoutError:
        raise _Behind from None


@routes.get("/v1/events", allow_head=False)  # HEAD would open the stream
async def all_events(request: web.Request) -> web.StreamResponse:
    source = request.app[FEED]
    last_id = request.headers.get("Last-Event-ID", "").strip()[:64] or None
    updates = watch(source, last_event_id=last_id)
    ids = _EventIds()
    async with contextlib.aclosing(updates):
        first = await anext(updates)  # read before answering: a store error stays a 5xx
        resp = await open_sse(request)
        timeout_s = source.send_timeout_s
        try:
            await _send(resp, f"retry: {RETRY_MS}\n".encode(), timeout_s)
            await _send(resp, sse_frame(first.type, first.data, ids.next()), timeout_s)
            async for update in updates:
                if gone(request):
                    raise ConnectionResetError("client disconnected")
                if update.type == "idle":
                    await _send(resp, b": ping\n\n", timeout_s)
                else:
                    frame = sse_frame(update.type, update.data, ids.next())
                    await _send(resp, frame, timeout_s)
        except ConnectionResetError:
            log.debug("feed.client_gone")
            return resp
        except _Behind:
            source.dropped += 1
            log.info("feed.reader_dropped", waited_s=timeout_s)
        else:
            with contextlib.suppress(ConnectionResetError):
                await resp.write_eof()
            return resp
    frame = sse_frame("reconnect", {"reason": "behind"}, ids.next())
    await _drop(request, resp, frame, source.drop_grace_s)
    return resp


async def _drop(
    request: web.Request, resp: web.StreamResponse, frame: bytes, grace_s: float
) -> None:
    """End a stream that fell behind (its place in the feed is already given
    up): a ``reconnect`` event and the end of the stream if the client takes
    them within ``grace_s``, then the connection closes either way. The
    client reconnects (with ``Last-Event-ID``) and gets a fresh snapshot."""
    try:
        async with asyncio.timeout(grace_s):
            await resp.write(frame)
            await resp.write_eof()
        clean = True
    except (TimeoutError, ConnectionError):
        clean = False
    transport = request.transport
    if transport is not None:
        # close() would hold the unsent bytes until a client that reads nothing
        # takes them: abort() frees them now.
        transport.close() if clean else transport.abort()


__all__ = [
    "FEED",
    "FeedSource",
    "FeedUpdate",
    "app_state",
    "jobs_in_view",
    "routes",
    "setup",
    "watch",
]
