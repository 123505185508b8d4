"""Limits below the request (F5), on each connection:

* a request head must arrive within ``header_timeout_s`` of the connection
  opening, or of its first byte on a kept-alive connection; a client trickling
  headers a byte at a time is closed then (aiohttp has no such timeout of its
  own: its keep-alive timer only covers a connection that sends nothing);
* a kept-alive connection with no request for ``idle_timeout_s`` is closed;
* at most ``max_connections_per_client`` connections per client address: one
  more is answered 429 at once and closed, so one client cannot take every
  file descriptor (a unix socket counts as one client);
* at most ``max_connections`` in all (429 past it too), below the process's file
  descriptor limit, so that running out of connections never means running
  out of descriptors for the database and the uploads. The per-client cap is
  a sixteenth of it by default: a handful of addresses cannot fill it, and
  whatever they hold that stalls is closed by the timeouts above and the
  body watchdog (``api/bodies.py``).

``listen`` opens the listener with this protocol; ``serve`` in ``app.py`` uses
it instead of aiohttp's sites. The request middleware tells the protocol when a
request is being handled, which stops the head deadline."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import socket
from collections import Counter
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from sona.api.errors import Handler, error_body, status_for
from sona.errors import Busy
from sona.settings import Settings

log = structlog.get_logger("sona.api")
LINGER_S = 2.0  # a refused connection's request is read and dropped this long


FD_RESERVE = 256  # descriptors kept for the store, uploads, the engine's pipes, logs


@dataclass
class ConnectionPolicy:
    header_timeout_s: float
    idle_timeout_s: float
    max_per_client: int
    max_total: int = 1 << 30
    open: Counter[str] = field(default_factory=Counter)  # connections per client
    total: int = 0

    def refusal(self, client: str) -> bytes | None:
        """The answer for one more connection from ``client``, if refused."""
        if self.open[client] >= self.max_per_client:
            return _refusal(Busy("too many connections from this client; try again shortly"))
        if self.total >= self.max_total:
            return _refusal(Busy("the server has too many connections; try again shortly"))
        return None


def descriptor_budget(wanted: int) -> int:
    """Connections the process can hold: the soft descriptor limit is raised
    toward the hard one as far as ``wanted`` needs (as Go's runtime does at
    start), and what is left after ``FD_RESERVE`` is the most there can be."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY or soft >= need:
        return wanted
    budget = max(1, soft - FD_RESERVE)
    log.warning("connection.fd_limit", max_connections=wanted, fd_limit=soft, using=budget)
    return budget


def _client_of(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "unix"


def _refusal(exc: Busy) -> bytes:
    """The whole answer, written before aiohttp sees the connection."""
    status = status_for(exc)
    # Ending in a newline, as every JSON body (api/middleware.end_json_with_newline).
    body = (json.dumps(error_body(exc.message, status, exc.code)) + "\n").encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class GuardedRequestHandler(RequestHandler):
    """aiohttp's per-connection protocol with the head deadline and the
    per-client connection count."""

    def __init__(self, manager: web.Server, *, policy: ConnectionPolicy, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.policy = policy
        self.client = ""
        self.admitted = False
        self.busy = False  # a request is being handled
        self.head_started = False
        self.deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.client = _client_of(transport)
        refusal = self.policy.refusal(self.client)
        if refusal is not None:
            log.info(
                "connection.refused",
                client=self.client,
                open=self.policy.open[self.client],
                total=self.policy.total,
            )
            assert isinstance(transport, asyncio.Transport)
            transport.write(refusal)
            # Half-close, and drop what the client still sends for a moment, so
            # it reads the 429 instead of a reset.
            transport.write_eof() if transport.can_write_eof() else transport.close()
            asyncio.get_running_loop().call_later(LINGER_S, transport.close)
            return
        self.admitted = True
        self.policy.open[self.client] += 1
        self.policy.total += 1
        super().connection_made(transport)
        self.head_started = True  # a new connection's head is due at once
        self._arm(self.policy.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        if not self.admitted:
            return  # a refused connection: its request is dropped
        if not self.busy and not self.head_started:
            self.head_started = True  # the first byte of the next request
            self._arm(self.policy.header_timeout_s)
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.admitted:
            return
        self.admitted = False
        self.policy.open[self.client] -= 1
        self.policy.total -= 1
        if self.policy.open[self.client] <= 0:
            del self.policy.open[self.client]
        self._disarm()
        super().connection_lost(exc)

    def request_started(self) -> None:
        self.busy = True
        self._disarm()

    def request_finished(self) -> None:
        self.busy = False
        self.head_started = False
        self._arm(self.policy.idle_timeout_s)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self.deadline = asyncio.get_running_loop().call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _expired(self) -> None:
        self.deadline = None
        if self.busy or self.transport is None:
            return
        event = "connection.header_timeout" if self.head_started else "connection.idle_timeout"
        log.info(event, client=self.client)
        self.force_close()  # closes the transport


@web.middleware
async def connection_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tell the connection a request is in hand (its head deadline no longer
    applies) and when it is done (the idle timer starts)."""
    protocol = request.protocol
    if not isinstance(protocol, GuardedRequestHandler):
        return await handler(request)  # e.g. aiohttp's test server
    protocol.request_started()
    try:
        return await handler(request)
    finally:
        protocol.request_finished()


async def listen(
    runner: web.AppRunner, settings: Settings, sock: socket.socket | None = None
) -> asyncio.Server:
    """Open the listener for a set-up ``runner``: on ``sock`` (a TCP socket bound
    before the slow start, so a taken port fails at once: service/startup.py),
    else on ``settings.socket`` (unix), else on ``settings.host:port``."""
    loop = asyncio.get_running_loop()
    server = runner.server
    assert server is not None, "runner.setup() first"
    policy = ConnectionPolicy(
        settings.header_timeout_s,
        settings.idle_timeout_s,
        settings.max_connections_per_client,
        max_total=descriptor_budget(settings.max_connections),
    )

    def protocol() -> GuardedRequestHandler:
        # The same options the runner gives aiohttp's own protocol (app.py).
        return GuardedRequestHandler(server, policy=policy, loop=loop, **handler_options(settings))

    if sock is not None:
        return await loop.create_server(protocol, sock=sock)
    if settings.socket is not None:
        settings.socket.unlink(missing_ok=True)
        listener = await loop.create_unix_server(protocol, str(settings.socket))
        os.chmod(settings.socket, 0o600)
        return listener
    return await loop.create_server(protocol, settings.host, settings.port, reuse_address=True)


def handler_options(settings: Settings) -> dict[str, Any]:
    """aiohttp RequestHandler options: no access log (ours is structured), and
    aiohttp's own keep-alive timer at the idle timeout."""
    return {"access_log": None, "keepalive_timeout": settings.idle_timeout_s}
