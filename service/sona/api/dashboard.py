"""The dashboard (I2): the page at ``/``, its assets, and the retained upload of
a job for playback (``GET /v1/jobs/{id}/audio``).

The page is plain HTML/JS/CSS from the package (``service/static/dashboard.*``),
no CDN and no build step; it lives on the all-jobs feed (``api/feed.py``) and the
ordinary JSON API, sending the API key from session storage when keys are on.
Its live view (``live.js``) speaks to ``GET /v1/realtime`` from the page."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from aiohttp import web

from sona.api.job_requests import load_job
from sona.errors import InvalidRequest, NotFound
from sona.wire import SNIFF_BYTES, sniff

routes = web.RouteTableDef()

STATIC = Path(__file__).resolve().parent.parent / "static"
# Served by name from this table only: nothing from the URL reaches a path (F7).
ASSETS = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
    "live.js": "text/javascript",  # the live view (microphone → /v1/realtime)
    "live-worklet.js": "text/javascript",  # its AudioWorklet
}
# Only our own script and style; blob: media for playback with an API key (an
# <audio> element cannot send an Authorization header, so the page fetches it).
CSP = (
    "default-src 'self'; media-src 'self' blob:; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
MEDIA_TYPES = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "mp3": "audio/mpeg",
    "mpeg": "audio/mpeg",
    "mp4": "audio/mp4",
    "webm": "audio/webm",
    "aiff": "audio/aiff",
}


@routes.get("/")
async def dashboard(request: web.Request) -> web.FileResponse:
    return web.FileResponse(
        STATIC / "dashboard.html",
        headers={
            "Content-Type": "text/html; charset=utf-8",
            "Content-Security-Policy": CSP,
            "Cache-Control": "no-cache",
        },
    )


@routes.get("/dashboard/{asset}")
async def dashboard_asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["asset"]
    if name not in ASSETS:
        raise NotFound(f"no asset {name!r}", param="asset")
    return web.FileResponse(
        STATIC / name, headers={"Content-Type": ASSETS[name], "Cache-Control": "no-cache"}
    )


def _read_head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(SNIFF_BYTES)


# One byte range, as players send it; anything else is refused, not ignored.
RANGE = re.compile(r"bytes=[0-9]*-[0-9]*")


@routes.get("/v1/jobs/{job_id}/audio")
async def job_audio(request: web.Request) -> web.FileResponse:
    """The upload as it was received, while retention keeps it; Range requests
    are answered 206 (FileResponse), so players can seek."""
    job = await load_job(request)
    if "Range" in request.headers and not RANGE.fullmatch(request.headers["Range"]):
        raise InvalidRequest("Range must be one range: bytes=START-END", param="Range")
    path = Path(job.file_path)
    try:
        head = await asyncio.to_thread(_read_head, path)
    except FileNotFoundError:
        raise NotFound(f"the upload of job {job.id} is no longer retained") from None
    media_type = MEDIA_TYPES.get(sniff(head) or "", "application/octet-stream")
    return web.FileResponse(
        path,
        headers={
            "Content-Type": media_type,
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, no-cache",
        },
    )
