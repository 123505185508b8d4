"""Request-level limits (F5): a token bucket per client and a cap on uploads in
flight, overall and per client. Both refuse with 429 and ``Retry-After``
(``Busy``) before any of the body is read.

A client is its API key when it presents a valid one (several machines behind
one key share its budget), else its address."""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import structlog
from aiohttp import web

from sona.api.errors import Handler
from sona.api.middleware import OPEN_PATHS, presented_key
from sona.errors import Busy
from sona.settings import Settings

log = structlog.get_logger("sona.api")
MAX_TRACKED_CLIENTS = 10_000  # buckets kept; the least recently seen go first


def client_key(request: web.Request) -> str:
    key = presented_key(request)
    if key is not None:
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"addr:{request.remote or 'unix'}"


class TokenBuckets:
    """One bucket per client: ``burst`` requests at once, refilled at ``rate``
    per second. Memory is bounded: past ``MAX_TRACKED_CLIENTS`` the client
    seen longest ago is forgotten (it starts again with a full bucket)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float) -> float:
        """Take a token: 0.0 when granted, else the seconds until one is due."""
        tokens, then = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        granted = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if granted else tokens, now)
        while len(self._buckets) > MAX_TRACKED_CLIENTS:
            self._buckets.popitem(last=False)
        return 0.0 if granted else (1.0 - tokens) / self.rate


class UploadSlots:
    """Uploads being received at once: at most ``total``, ``per_client`` each."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self._held: Counter[str] = Counter()

    @contextmanager
    def hold(self, client: str) -> Iterator[None]:
        if sum(self._held.values()) >= self.total:
            raise Busy(f"{self.total} uploads are in progress; try again shortly", retry_after=2)
        if self._held[client] >= self.per_client:
            raise Busy(
                f"this client already has {self.per_client} uploads in progress", retry_after=2
            )
        self._held[client] += 1
        try:
            yield
        finally:
            self._held[client] -= 1
            if not self._held[client]:
                del self._held[client]


@dataclass(frozen=True)
class Limits:
    buckets: TokenBuckets | None  # None: no rate limit
    uploads: UploadSlots

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        buckets = None
        if settings.rate_limit_per_s > 0:
            buckets = TokenBuckets(settings.rate_limit_per_s, settings.rate_limit_burst)
        return cls(buckets, UploadSlots(settings.max_uploads, settings.max_uploads_per_client))


LIMITS = web.AppKey("limits", Limits)


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    buckets = request.app[LIMITS].buckets
    # Probes and the API description are exempt: an orchestrator's health
    # checks must never be what a busy client's budget refuses.
    if buckets is not None and request.path not in OPEN_PATHS:
        wait = buckets.take(client_key(request), time.monotonic())
        if wait > 0:
            log.info("request.rate_limited", client=client_key(request))
            raise Busy("too many requests; slow down", retry_after=max(1, math.ceil(wait)))
    return await handler(request)


@contextmanager
def upload_slot(request: web.Request) -> Iterator[None]:
    """Hold one of the upload slots while a request body is being stored."""
    with request.app[LIMITS].uploads.hold(client_key(request)):
        yield
