"""Notifiers: LISTEN/NOTIFY between two nodes on real PostgreSQL (wake-ups,
cancels and job events reach the other node, never echo back to the sender,
and survive the connection being cut), and the in-process one."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from sona.notify import (
    APPLICATION_NAME,
    PAYLOAD_MAX,
    Handlers,
    LocalNotifier,
    PgNotifier,
    _payloads,
)
from tests.pg import pg_schema_url

BOUND_S = 30


class Inbox:
    def __init__(self) -> None:
        self.got: list[tuple[str, ...]] = []
        self.changed = asyncio.Event()

    def handlers(self) -> Handlers:
        async def cancel(job_id: str) -> None:
            self._add("cancel", job_id)

        return Handlers(
            queued=lambda job_id: self._add("queued", job_id),
            cancel=cancel,
            event=lambda job_id, type_: self._add("event", job_id, type_),
        )

    def _add(self, *item: str) -> None:
        self.got.append(item)
        self.changed.set()

    async def until(self, item: tuple[str, ...]) -> None:
        async with asyncio.timeout(BOUND_S):
            while item not in self.got:
                self.changed.clear()
                await self.changed.wait()


async def _started(url: str) -> tuple[PgNotifier, Inbox]:
    inbox = Inbox()
    notifier = PgNotifier(url)
    await notifier.start(inbox.handlers())
    async with asyncio.timeout(BOUND_S):
        await notifier.connected.wait()
    return notifier, inbox


async def test_pg_notifications_cross_nodes_and_survive_a_cut_connection() -> None:
    async with pg_schema_url() as url:
        api, api_inbox = await _started(url)
        worker, worker_inbox = await _started(url)
        try:
            await api.job_queued("j1")
            await worker_inbox.until(("queued", "j1"))
            await api.cancel_requested("j1")
            await worker_inbox.until(("cancel", "j1"))
            worker.job_event("j1", "segment")
            await api_inbox.until(("event", "j1", "segment"))
            # The sender's own messages are not delivered back to it as remote ones.
            assert ("event", "j1", "segment") not in worker_inbox.got
            # The server drops the listening connection: it comes back by itself.
            admin = await asyncpg.connect(url)
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = $1",
                APPLICATION_NAME,
            )
            await admin.close()
            assert killed >= 1
            async with asyncio.timeout(BOUND_S):
                while True:
                    worker.job_event("j2", "completed")
                    if ("event", "j2", "completed") in api_inbox.got:
                        break
                    await asyncio.sleep(0.2)
        finally:
            await api.close()
            await worker.close()


async def test_local_notifier_calls_this_process_handlers() -> None:
    inbox = Inbox()
    notifier = LocalNotifier()
    await notifier.start(inbox.handlers())
    await notifier.job_queued("a")
    await notifier.cancel_requested("a")
    notifier.job_event("a", "segment")  # the hub told this process already
    assert inbox.got == [("queued", "a"), ("cancel", "a")]


def test_payloads_stay_under_the_notify_limit_and_drop_repeats() -> None:
    batch: list[list[str]] = [["e", f"job-{n:060d}", "segment"] for n in range(400)]
    batch += batch[:50]
    payloads = _payloads("node", batch)
    assert len(payloads) > 1 and all(len(p.encode()) <= PAYLOAD_MAX for p in payloads)
    import json

    sent: list[Any] = [m for p in payloads for m in json.loads(p)["m"]]
    assert sent == [list(m) for m in dict.fromkeys(tuple(m) for m in batch)]
