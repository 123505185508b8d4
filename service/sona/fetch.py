"""Fetching audio by URL for ``POST /v1/jobs {"url": ...}`` (A1), under the
outbound address rules of ``netguard.py`` (E3): refused addresses are never
connected to, redirects are not followed, and the body streams through the
same size limit as an upload."""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp

from sona.errors import AddressRefused, InvalidRequest, UrlRefused
from sona.netguard import GuardedConnector, check_url
from sona.uploads import CHUNK, StoredUpload, UploadDir


async def fetch(
    url: str,
    uploads: UploadDir,
    *,
    allow_private: bool,
    max_bytes: int,
    timeout_s: float,
) -> StoredUpload:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest("url must be an http(s) URL with a host", param="url")
    try:
        check_url(url, allow_private=allow_private)
        return await _fetch(url, uploads, allow_private, max_bytes, timeout_s)
    except AddressRefused as exc:
        raise UrlRefused(exc.message, param="url") from None


async def _fetch(
    url: str, uploads: UploadDir, allow_private: bool, max_bytes: int, timeout_s: float
) -> StoredUpload:
    connector = GuardedConnector(allow_private=allow_private)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        try:
            async with session.get(url, allow_redirects=False) as resp:
                if resp.status != 200:
                    raise UrlRefused(
                        f"fetching the url answered HTTP {resp.status} (redirects are not "
                        "followed)",
                        param="url",
                    )
                name = urlsplit(url).path.rsplit("/", 1)[-1]
                return await uploads.save(
                    resp.content.iter_chunked(CHUNK),
                    name=name,
                    max_bytes=max_bytes,
                    idle_timeout_s=timeout_s,
                )
        except aiohttp.ClientError as exc:
            raise UrlRefused(f"the url could not be fetched: {exc}", param="url") from exc
