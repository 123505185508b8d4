"""One idle timeout over every read of a request body (F5; RELIABILITY 18, 29).

A handler may read its body in many places: a multipart preamble, a part's
headers, a text field, the gap between parts, the file part, a JSON body. Rather
than wrap each of those reads (and miss the next one someone writes), the
middleware here watches the body's stream itself: while it is incomplete, it
must bring at least ``MIN_BYTES`` in every ``upload_idle_timeout_s`` window.
When it does not, the stream is failed with ``BodyStalled``: the read pending
in the handler (and any later one) raises it, the request ends 408
(``upload_timeout``), and the upload slot it held is free again.

``BodyStalled`` is a ``TimeoutError`` on purpose: after the handler, aiohttp
reads what is left of an unread body for a while, treats a ``TimeoutError``
from that read as "give up", and closes the connection instead of waiting.

The window is sampled ``CHECKS`` times, so a stall is cut between 1 and
1 + 1/``CHECKS`` windows after it began; a request with no body, or one whose
body has all arrived, costs no timer at all.

The handlers read their bodies without pausing, so a slow body is always the
client's: a handler that stopped reading half-way would be seen as a stall."""

from __future__ import annotations

import asyncio
from collections import deque

import structlog
from aiohttp import StreamReader, web

from sona.api.errors import Handler
from sona.errors import UploadTimeout
from sona.keys import SETTINGS

log = structlog.get_logger("sona.api")
CHECKS = 4  # samples per window
# Below this many bytes per window a body is stalled, not slow: a trickle of a
# byte every few seconds would otherwise hold its upload slot for ever.
MIN_BYTES = 1024


class BodyStalled(TimeoutError):
    """Set on a request body's stream that stopped arriving."""


class BodyWatchdog:
    """Fails ``content`` with ``BodyStalled`` once fewer than ``MIN_BYTES``
    arrived in the last ``window_s`` while it was incomplete."""

    def __init__(self, content: StreamReader, window_s: float) -> None:
        self.content = content
        self.window_s = window_s
        self._seen: deque[int] = deque([content.total_bytes], maxlen=CHECKS + 1)
        self._timer: asyncio.TimerHandle | None = None
        self._schedule()

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.window_s / CHECKS, self._check)

    def _check(self) -> None:
        self._timer = None
        if self.content.is_eof() or self.content.exception() is not None:
            return  # all of it arrived (or the connection is gone): nothing to watch
        self._seen.append(self.content.total_bytes)
        if len(self._seen) > CHECKS and self._seen[-1] - self._seen[0] < MIN_BYTES:
            log.info("request.body_stalled", received=self.content.total_bytes)
            self.content.set_exception(BodyStalled())
            return
        self._schedule()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


@web.middleware
async def body_timeout_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.body_exists or request.content.is_eof():
        return await handler(request)
    window_s = request.app[SETTINGS].upload_idle_timeout_s
    watchdog = BodyWatchdog(request.content, window_s)
    try:
        return await handler(request)
    except BodyStalled:
        raise UploadTimeout(
            f"the request body stalled: less than {MIN_BYTES} bytes in {window_s:.0f} s"
        ) from None
    finally:
        watchdog.cancel()
