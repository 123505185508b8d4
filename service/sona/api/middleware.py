"""Request-scoped concerns: request ids and the access log, the loopback Host
check, the cross-origin check, API keys."""

from __future__ import annotations

import asyncio
import time
import uuid
from urllib.parse import urlsplit

import structlog
from aiohttp import hdrs, web

from sona.api.errors import Handler
from sona.errors import Forbidden, Unauthorized
from sona.keys import API_KEYS, METRICS, SETTINGS

access_log = structlog.get_logger("sona.access")
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]", "localhost."}
# Probes, the API description and the dashboard's page hold no data; a browser
# cannot send a key for them (the dashboard asks for one and sends it itself).
OPEN_PATHS = {
    "/health",
    "/ready",
    "/openapi.json",
    "/docs",
    "/docs/docs.js",
    "/docs/docs.css",
    "/",
    "/dashboard/dashboard.js",
    "/dashboard/dashboard.css",
    "/dashboard/live.js",
    "/dashboard/live-worklet.js",
}


REQUEST_ID = web.RequestKey("request_id", str)


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The request id, one access line and the HTTP metrics for every request.

    The id goes on the response in ``add_request_id`` (``on_response_prepare``),
    so streams, which send their headers inside the handler, carry it too."""
    rid = request.headers.get("X-Request-ID", "")[:128] or uuid.uuid4().hex
    request[REQUEST_ID] = rid
    started = time.perf_counter()
    status = 500
    with structlog.contextvars.bound_contextvars(request_id=rid):
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        except web.HTTPException as exc:  # redirects; errors became responses below us
            status = exc.status
            exc.headers["X-Request-ID"] = rid
            raise
        except asyncio.CancelledError:
            status = 499  # the client went away first (nginx's code for it)
            raise
        finally:
            _access_line(request, status, time.perf_counter() - started)


def _access_line(request: web.Request, status: int, seconds: float) -> None:
    route = route_of(request)
    access_log.info(
        "http.request",
        method=request.method,
        route=route,
        status=status,
        duration_ms=round(seconds * 1000, 1),
    )
    if METRICS in request.app:
        request.app[METRICS].http_request(request.method, route, status, seconds)


def route_of(request: web.Request) -> str:
    """The route's canonical path (``/v1/jobs/{job_id}``), never the raw URL:
    a label per job id would grow without end."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every response, streamed or not, names its request."""
    rid = request.get(REQUEST_ID)
    if rid:
        response.headers["X-Request-ID"] = rid


async def end_json_with_newline(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every JSON body ends with a newline, so curl's output
    does not run into the shell prompt. The one place for all of them: our
    ``json_response`` calls, error bodies, the transcript's JSON formats."""
    if not isinstance(response, web.Response) or response.content_type != "application/json":
        return
    body = response.body
    if not isinstance(body, (bytes, bytearray)) or not body or body.endswith(b"\n"):
        return
    if response.compression:  # never on here; a compressed body is not ours to extend
        return
    response.body = bytes(body) + b"\n"
    # aiohttp may have counted the body already; the newline is part of it.
    if hdrs.CONTENT_LENGTH in response.headers:
        response.headers[hdrs.CONTENT_LENGTH] = str(len(response.body))


def _host_name(host: str) -> str:
    if host.startswith("["):
        return host.split("]")[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    # A web page in the user's browser can reach a loopback daemon; it cannot
    # make the browser send a loopback Host header (DNS rebinding defence).
    host = _host_name(request.host or "").lower()
    if settings.on_loopback and settings.socket is None and host not in LOOPBACK_NAMES:
        raise Forbidden("the Host header must name this machine (localhost or 127.0.0.1)")
    check_origin(request)
    keys = request.app[API_KEYS]
    if keys and request.path not in OPEN_PATHS and presented_key(request) is None:
        raise Unauthorized("a valid API key is required: Authorization: Bearer KEY")
    return await handler(request)


SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
DEFAULT_PORTS = {"http": 80, "https": 443}


def check_origin(request: web.Request, *, always: bool = False) -> None:
    """Refuse a state-changing request that a web page on another origin made
    the user's browser send: a form or ``text/plain`` POST needs no CORS
    preflight, and a keyless loopback daemon would act on it. Browsers name the
    page's origin in ``Origin`` (and ``Sec-Fetch-Site``); curl, the SDKs and
    the MCP layer send neither, and the dashboard is the daemon's own origin."""
    if request.method in SAFE_METHODS and not always:  # a WebSocket's GET acts: always
        return
    origin = request.headers.get("Origin")
    if origin is None:
        if request.headers.get("Sec-Fetch-Site", "").lower() in ("cross-site", "same-site"):
            raise Forbidden("cross-site requests are refused (Sec-Fetch-Site)")
        return
    settings = request.app[SETTINGS]
    allowed = {o.lower().rstrip("/") for o in settings.allowed_origins}
    own = [f"{request.scheme}://{request.host}", settings.public_url or ""]
    if "*" in allowed or origin.lower().rstrip("/") in allowed:
        return
    if any(_same_origin(origin, o) for o in own if o):
        return
    raise Forbidden(
        f"cross-origin request refused: Origin {origin[:200]} is not this server's own "
        "(allow it with SONA_ALLOWED_ORIGINS)"
    )


def _same_origin(origin: str, own: str) -> bool:
    """Same host and port (a port left out is the scheme's default). The scheme
    is not compared: behind a TLS proxy the daemon sees http for an https page,
    and no page can be served with both schemes on one host and port."""
    try:
        a, b = urlsplit(origin.strip()), urlsplit(own)
        ports = (a.port or DEFAULT_PORTS.get(a.scheme), b.port or DEFAULT_PORTS.get(a.scheme))
    except ValueError:
        return False
    return bool(a.hostname) and a.hostname == b.hostname and ports[0] == ports[1]


# A browser's WebSocket cannot set headers; OpenAI's browser clients pass the
# key as a subprotocol instead (``realtime, openai-insecure-api-key.KEY``).
KEY_PROTOCOL = "openai-insecure-api-key."


def presented_key(request: web.Request) -> str | None:
    """The configured API key this request carries, or None. The scheme is
    matched case-insensitively (RFC 9110); a bare key without it is refused.
    A WebSocket upgrade may carry it as a ``openai-insecure-api-key.KEY``
    subprotocol instead (never echoed back: the server picks ``realtime``)."""
    scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
    given = given.strip()
    if not given and request.headers.get("Upgrade", "").lower() == "websocket":
        scheme, given = "bearer", _protocol_key(request)
    if scheme.lower() != "bearer" or not given:
        return None
    return given if request.app[API_KEYS].matches(given) else None


def _protocol_key(request: web.Request) -> str:
    offered = request.headers.get("Sec-WebSocket-Protocol", "").split(",")
    keys = [p.strip()[len(KEY_PROTOCOL) :] for p in offered if p.strip().startswith(KEY_PROTOCOL)]
    return keys[0] if len(keys) == 1 else ""
