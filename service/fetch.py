"""Fetching audio by URL for ``POST /v1/jobs {"url": ...}`` (A1), under the
callback-URL address rules (E3):

* http and https only;
* link-local and cloud-metadata addresses (169.254.0.0/16, fe80::/10) always
  refused;
* any other non-global address — private, loopback, CGNAT 100.64/10,
  IPv4-mapped IPv6, and odd spellings such as ``0x7f000001`` that resolve to
  them — refused unless private targets are allowed;
* the connection goes to the address that was checked (the check runs inside
  aiohttp's resolver, so DNS cannot answer differently a second time);
* redirects are not followed; the body streams through the same size limit as
  an upload."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from service.errors import InvalidRequest, UrlRefused
from service.uploads import CHUNK, StoredUpload, UploadDir

ALWAYS_REFUSED = [ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10")]


def check_address(host: str, *, allow_private: bool) -> None:
    """Refuse an IP address that the rules above do not allow."""
    ip = ipaddress.ip_address(host.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in net for net in ALWAYS_REFUSED):
        raise UrlRefused(f"{ip} is a link-local/metadata address", param="url")
    if not ip.is_global and not allow_private:
        raise UrlRefused(
            f"{ip} is not a public address (private targets are not allowed here)", param="url"
        )


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that refuses disallowed addresses before connecting."""

    def __init__(self, *, allow_private: bool) -> None:
        self._inner = DefaultResolver()
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            check_address(result["host"], allow_private=self._allow_private)
        return results

    async def close(self) -> None:
        await self._inner.close()


def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse a URL by its form, and by its host when that is an IP literal
    (aiohttp does not ask the resolver about literals)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest("url must be an http(s) URL with a host", param="url")
    try:
        ipaddress.ip_address(parts.hostname.split("%")[0])
    except ValueError:
        return  # a name: checked by GuardedResolver once resolved
    check_address(parts.hostname, allow_private=allow_private)


async def fetch(
    url: str,
    uploads: UploadDir,
    *,
    allow_private: bool,
    max_bytes: int,
    timeout_s: float,
) -> StoredUpload:
    check_url(url, allow_private=allow_private)
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(allow_private=allow_private))
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
