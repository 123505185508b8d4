"""The one error → HTTP table, and the middleware that applies it. Every error
body has OpenAI's shape: {"error": {"message", "type", "code", "param"}}.

The OpenAI SDK retries 408/409/429/5xx: a 5xx that a retry cannot heal carries
``x-should-retry: false``."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from sona import errors as e

log = structlog.get_logger("sona.api")

# Most specific first: the first isinstance match wins.
STATUS: list[tuple[type[e.SonaError], int]] = [
    (e.JobNotFinished, 409),
    (e.ModelNotFound, 404),
    (e.QueueFull, 503),
    (e.Busy, 429),
    (e.InvalidRequest, 400),
    (e.EmptyFile, 400),
    (e.InvalidAudio, 400),
    (e.Unauthorized, 401),
    (e.Forbidden, 403),
    (e.NotFound, 404),
    (e.Conflict, 409),
    (e.Cancelled, 409),
    (e.PayloadTooLarge, 413),
    (e.UnsupportedMedia, 415),
    (e.UpgradeRequired, 426),
    (e.AudioTooLong, 422),
    (e.UrlRefused, 422),
    (e.InvalidCallbackUrl, 422),
    (e.AddressRefused, 422),
    (e.NoModel, 503),
    (e.StorageFull, 507),
    (e.UploadTimeout, 408),
    (e.JobTimeout, 504),
]
# 5xx that the same request would meet again: the OpenAI SDK must not retry them.
NO_RETRY = (
    e.NoModel,
    e.StorageFull,
    e.EngineError,
    e.JobTimeout,
    e.ModelLoadFailed,
    e.WorkerCrashed,
)


def status_for(exc: e.SonaError) -> int:
    return next((status for cls, status in STATUS if isinstance(exc, cls)), 500)


def _type_for(status: int) -> str:
    return {
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        429: "rate_limit_error",
    }.get(status, "invalid_request_error" if status < 500 else "server_error")


# An absolute file path inside a message (not the path part of a URL, nor one
# of Sona's own routes, /v1/…): error text from libraries (FFmpeg, CTranslate2,
# the OS) may name the server's files.
_SERVER_PATH = re.compile(r"(?<![\w:/.~-])/(?!v1/)(?:[\w.@+-]+/)+[\w.@+-]*")


def public_message(message: str, keep: tuple[str, ...] = ()) -> str:
    """``message`` fit for a client: server paths replaced by ``<path>``, but
    for those in ``keep`` (paths the operator configured)."""
    slots = {f"\x00{n}\x00": path for n, path in enumerate(sorted(keep, key=len, reverse=True))}
    for slot, path in slots.items():
        message = message.replace(path, slot)
    message = _SERVER_PATH.sub("<path>", message)
    for slot, path in slots.items():
        message = message.replace(slot, path)
    return message


def error_body(
    message: str, status: int, code: str, param: str | None = None, keep: tuple[str, ...] = ()
) -> dict[str, object]:
    return {
        "error": {
            "message": public_message(message, keep),
            "type": _type_for(status),
            "code": code,
            "param": param,
        }
    }


def error_response(exc: e.SonaError) -> web.Response:
    status = status_for(exc)
    body = error_body(exc.message, status, exc.code, exc.param, exc.public_paths)
    resp = web.json_response(body, status=status)
    if isinstance(exc, e.Busy):
        resp.headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, e.Unauthorized):
        resp.headers["WWW-Authenticate"] = 'Bearer realm="sona"'
    if isinstance(exc, NO_RETRY):
        resp.headers["x-should-retry"] = "false"
    if isinstance(exc, e.JobNotFinished):
        resp.headers["X-Job-Status"] = exc.status
    return resp


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except e.SonaError as exc:
        if status_for(exc) >= 500:
            log.warning("request.refused", code=exc.code, message=exc.message)
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # aiohttp's own 404/405/413: same body shape as ours.
        code = {404: "not_found", 405: "method_not_allowed", 413: "file_too_large"}.get(
            exc.status, "http_error"
        )
        return web.json_response(
            error_body(exc.reason, exc.status, code),
            status=exc.status,
            headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"},
        )
    except ConnectionResetError:
        # The client went away (aiohttp's ClientConnectionResetError is one):
        # nothing failed on our side and there is no one to answer.
        log.info("request.aborted", method=request.method, path=request.path)
        raise
    except Exception:
        log.exception("request.crashed")
        return web.json_response(
            error_body("internal server error", 500, "internal_error"), status=500
        )
