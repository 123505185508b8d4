"""In-process publish/subscribe of job events, so streaming responses and SSE
wake the moment the worker stores something. The database stays the source of
truth: a subscriber that reconnects replays from the store, not from here."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

# Event types: status, progress, segment, completed, failed, cancelled.
TERMINAL = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True)
class JobEvent:
    job_id: str
    type: str
    data: dict[str, Any]


class EventHub:
    def __init__(self) -> None:
        self._subs: dict[str, set[asyncio.Queue[JobEvent]]] = defaultdict(set)
        self._all: set[asyncio.Queue[JobEvent]] = set()

    @contextmanager
    def subscribe(self, job_id: str) -> Iterator[asyncio.Queue[JobEvent]]:
        queue: asyncio.Queue[JobEvent] = asyncio.Queue()
        self._subs[job_id].add(queue)
        try:
            yield queue
        finally:
            self._subs[job_id].discard(queue)
            if not self._subs[job_id]:
                del self._subs[job_id]

    @contextmanager
    def subscribe_all(self) -> Iterator[asyncio.Queue[JobEvent]]:
        """Every job's events, for views of the whole queue (the dashboard feed).
        Subscribers drain their queue on each wake-up, so it stays short."""
        queue: asyncio.Queue[JobEvent] = asyncio.Queue()
        self._all.add(queue)
        try:
            yield queue
        finally:
            self._all.discard(queue)

    def publish(self, job_id: str, type_: str, data: dict[str, Any]) -> None:
        event = JobEvent(job_id, type_, data)
        for queue in (*self._subs.get(job_id, ()), *self._all):
            queue.put_nowait(event)
