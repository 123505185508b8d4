"""Request-scoped concerns: request ids, the loopback Host check, API keys."""

from __future__ import annotations

import hmac
import uuid

import structlog
from aiohttp import web

from service.api.errors import Handler
from service.errors import Forbidden, Unauthorized
from service.keys import API_KEYS, SETTINGS

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
}


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = request.headers.get("X-Request-ID", "")[:128] or uuid.uuid4().hex
    with structlog.contextvars.bound_contextvars(request_id=rid):
        try:
            resp = await handler(request)
        except web.HTTPException as exc:
            exc.headers["X-Request-ID"] = rid
            raise
        if not resp.prepared:
            resp.headers["X-Request-ID"] = rid
        return resp


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
    keys = request.app[API_KEYS]
    if keys and request.path not in OPEN_PATHS and presented_key(request) is None:
        raise Unauthorized("a valid API key is required: Authorization: Bearer KEY")
    return await handler(request)


def presented_key(request: web.Request) -> str | None:
    """The configured API key this request carries, or None. The scheme is
    matched case-insensitively (RFC 9110); a bare key without it is refused."""
    scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        return None
    matches = [hmac.compare_digest(given.encode(), k.encode()) for k in request.app[API_KEYS]]
    return given if any(matches) else None
