"""A real webhook receiver for the tests: an aiohttp server on 127.0.0.1 in a
thread of its own, so in-process tests and tests of spawned daemons share it.
Each POST takes the next answer of a script: ``"200"``, ``"500"``, ``"410"``,
``"429:<retry-after>"``, ``"301"``, or ``"hang"`` (no answer until the test
ends); past the script's end it answers 200."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from aiohttp import web


@dataclass(frozen=True)
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() on arrival
    answer: str


class Receiver:
    def __init__(self, script: list[str]) -> None:
        self.script = list(script)
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def posts(self, path: str = "/hook") -> list[Hit]:
        with self._lock:
            return [h for h in self.hits if h.path == path]

    def wait_for(self, count: int, timeout: float = 120) -> list[Hit]:
        """At least ``count`` hits on /hook, waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while len(self.posts()) < count:
            assert time.monotonic() < deadline, f"only {len(self.posts())} of {count} hits"
            time.sleep(0.05)
        return self.posts()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        with self._lock:
            answer = self.script.pop(0) if self.script and request.path == "/hook" else "200"
            self.hits.append(Hit(request.path, dict(request.headers), body, time.time(), answer))
        if answer == "hang":
            await self._release.wait()
            return web.Response(status=200)
        if answer.startswith("429"):
            return web.Response(status=429, headers={"Retry-After": answer.split(":", 1)[1]})
        if answer == "301":
            return web.Response(status=301, headers={"Location": "/elsewhere"})
        return web.Response(status=int(answer), text="ok")

    def _start(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = self._runner.addresses[0][1]
        started.set()
        self._loop.run_forever()

    @contextmanager
    def running(self) -> Iterator[Receiver]:
        started = threading.Event()
        thread = threading.Thread(target=self._start, args=(started,), daemon=True)
        thread.start()
        assert started.wait(10)
        try:
            yield self
        finally:
            self._loop.call_soon_threadsafe(self._release.set)
            assert self._runner is not None
            fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            fut.result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            thread.join(10)
            self._loop.close()
