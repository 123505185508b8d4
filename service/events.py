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

    def publish(self, job_id: str, type_: str, data: dict[str, Any]) -> None:
        event = JobEvent(job_id, type_, data)
        for queue in self._subs.get(job_id, ()):
            queue.put_nowait(event)
