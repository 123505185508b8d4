"""Notifications between the nodes that share a store: a job was queued (wake a
worker), a cancel was asked for (stop the job wherever it runs), a job has news
(wake its followers: SSE, streaming responses, the feed, the MCP wait tool).

They are wake-ups only. The store stays the source of truth and every waiter
still polls it, so a lost notification delays, never loses. Hence they carry
ids and event types, never data: receivers read the store.

``LocalNotifier`` serves one process (SQLite); ``PgNotifier`` crosses machines
with PostgreSQL's LISTEN/NOTIFY on one dedicated connection, re-opened with
backoff when it drops. ``notifier_for(url)`` picks one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
import structlog

from sona.store import POSTGRES_SCHEMES

log = structlog.get_logger("sona.notify")
# NOTIFY payloads must stay under 8000 bytes; several messages share one.
PAYLOAD_MAX = 7000
BACKOFF_MAX_S = 30.0
SEND_QUEUE_MAX = 10_000
APPLICATION_NAME = "sona-notify"  # how its connection shows in pg_stat_activity


async def _nothing(job_id: str) -> None:
    return None


@dataclass
class Handlers:
    """What a node does when told something (defaults: nothing, as on an API node,
    which runs no worker)."""

    queued: Callable[[str], None] = lambda job_id: None
    cancel: Callable[[str], Coroutine[Any, Any, None]] = _nothing
    event: Callable[[str, str], None] = lambda job_id, type_: None


class Notifier(Protocol):
    async def start(self, handlers: Handlers) -> None: ...

    async def job_queued(self, job_id: str) -> None:
        """A job is in the queue: a worker should look."""
        ...

    async def cancel_requested(self, job_id: str) -> None:
        """The store flags the cancel; the worker running the job stops it now."""
        ...

    def job_event(self, job_id: str, type_: str) -> None:
        """This node published a job event (``EventHub``): tell the other nodes."""
        ...

    async def close(self) -> None: ...


class LocalNotifier:
    """One process: the worker and every follower live here already."""

    def __init__(self) -> None:
        self._handlers = Handlers()

    async def start(self, handlers: Handlers) -> None:
        self._handlers = handlers

    async def job_queued(self, job_id: str) -> None:
        self._handlers.queued(job_id)

    async def cancel_requested(self, job_id: str) -> None:
        await self._handlers.cancel(job_id)

    def job_event(self, job_id: str, type_: str) -> None:
        pass  # the hub has told this process's followers itself

    async def close(self) -> None:
        pass


class PgNotifier:
    """LISTEN/NOTIFY on one channel per schema, so deployments (and tests) that
    share a database in separate schemas do not wake each other."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._node = uuid.uuid4().hex[:12]
        self._handlers = Handlers()
        self._outbox: asyncio.Queue[list[str]] = asyncio.Queue(SEND_QUEUE_MAX)
        self._task: asyncio.Task[None] | None = None
        self._channel = ""
        self._cancels: set[asyncio.Task[None]] = set()  # held: the loop keeps weak refs
        self.connected = asyncio.Event()

    async def start(self, handlers: Handlers) -> None:
        self._handlers = handlers
        self._task = asyncio.create_task(self._run(), name="sona-notify")

    async def job_queued(self, job_id: str) -> None:
        self._handlers.queued(job_id)  # a worker in this process, if any
        self._send(["q", job_id, ""])

    async def cancel_requested(self, job_id: str) -> None:
        self._send(["c", job_id, ""])
        await self._handlers.cancel(job_id)

    def job_event(self, job_id: str, type_: str) -> None:
        self._send(["e", job_id, type_])

    def _send(self, message: list[str]) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # a wake-up lost: a poll later
            self._outbox.put_nowait(message)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        """Connect, listen and send until closed; reconnect with backoff."""
        delay = 0.5
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(
                    self._url, server_settings={"application_name": APPLICATION_NAME}
                )
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                schema = await conn.fetchval("SELECT current_schema()")
                self._channel = f"sona_{schema}"[:63]
                await conn.add_listener(self._channel, self._on_notify)
                self.connected.set()
                delay = 0.5
                # Whatever was said while we were away is lost: look at the queue.
                self._handlers.queued("")
                await self._send_until_lost(conn, lost)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("notify.connection_lost", error=str(exc), retry_s=delay)
            finally:
                self.connected.clear()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(conn.close(timeout=2))
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)

    async def _send_until_lost(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        while not lost.is_set():
            get = asyncio.ensure_future(self._outbox.get())
            gone = asyncio.ensure_future(lost.wait())
            await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
            gone.cancel()
            if not get.done():
                get.cancel()
                return
            batch = [get.result()]
            while not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            for payload in _payloads(self._node, batch):
                await conn.execute("SELECT pg_notify($1, $2)", self._channel, payload)

    async def _cancel(self, job_id: str) -> None:
        try:
            await self._handlers.cancel(job_id)
        except Exception:  # the store flag still reaches the worker at its next heartbeat
            log.exception("notify.cancel_failed", job_id=job_id)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            body = json.loads(payload)
            if body["n"] == self._node:
                return  # our own, delivered here already
            for kind, job_id, type_ in body["m"]:
                if kind == "q":
                    self._handlers.queued(job_id)
                elif kind == "c":
                    task = asyncio.get_running_loop().create_task(self._cancel(job_id))
                    self._cancels.add(task)
                    task.add_done_callback(self._cancels.discard)
                elif kind == "e":
                    self._handlers.event(job_id, type_)
        except Exception:  # a malformed payload is someone else's bug; never ours to die of
            log.exception("notify.bad_payload", payload=payload[:200])


def _payloads(node: str, batch: list[list[str]]) -> list[str]:
    """Messages, duplicates dropped (a job's segment events come in bursts), packed
    into payloads under the NOTIFY size limit."""
    unique = list(dict.fromkeys(tuple(m) for m in batch))
    out: list[str] = []
    current: list[tuple[str, ...]] = []
    for message in unique:
        candidate = json.dumps({"n": node, "m": [*current, message]})
        if current and len(candidate) > PAYLOAD_MAX:
            out.append(json.dumps({"n": node, "m": current}))
            current = []
        current.append(message)
    if current:
        out.append(json.dumps({"n": node, "m": current}))
    return out


def notifier_for(store_url: str) -> Notifier:
    if store_url.startswith(POSTGRES_SCHEMES):
        return PgNotifier(store_url)
    return LocalNotifier()
