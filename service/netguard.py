"""The outbound address rules (E3), shared by URL submission (``fetch.py``) and
webhook delivery (``dispatcher.py``):

* http and https only;
* link-local and cloud-metadata addresses (169.254.0.0/16, fe80::/10) always
  refused, however spelled;
* any other non-global address — private, loopback, CGNAT 100.64/10, and the
  same hidden inside IPv6 (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible,
  NAT64 ``64:ff9b::/96``, 6to4), legacy IPv4 spellings such as ``0x7f000001``,
  ``2130706433`` or ``0177.0.0.1``, and the ``localhost`` names (RFC 6761) —
  refused unless private targets are allowed;
* the connection goes to the address that was checked: the check runs inside
  aiohttp's resolver (``GuardedResolver``) on the very list the connector then
  dials, so DNS cannot answer differently a second time. The URL is left as
  it is, so the Host header and TLS SNI still name the host.

Refusals raise ``AddressRefused``; each caller turns it into its own error."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from sona.errors import AddressRefused

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
ALWAYS_REFUSED = [ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10")]
NAT64 = ipaddress.ip_network("64:ff9b::/96")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
RESOLVE_TIMEOUT_S = 5.0


def embedded_ipv4(ip: IP) -> IP:
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64,
    6to4), which is where a connection to it may end up; else ``ip``."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return ip
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in NAT64 or (ip in IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def check_address(host: str, *, allow_private: bool) -> None:
    """Refuse an IP address that the rules above do not allow."""
    ip = embedded_ipv4(ipaddress.ip_address(host.split("%")[0]))
    if any(ip in net for net in ALWAYS_REFUSED):
        raise AddressRefused(f"{ip} is a link-local/metadata address")
    if not ip.is_global and not allow_private:
        raise AddressRefused(f"{ip} is not a public address (private targets are not allowed here)")


def literal_ip(host: str) -> str | None:
    """``host`` as an IP address when it is one in any spelling a resolver
    would accept (``0x7f000001``, ``2130706433``, ``127.1``), without asking DNS."""
    bare = host.strip("[]").split("%")[0]
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    if bare and all(c in "0123456789abcdefxABCDEFX." for c in bare):
        try:
            return socket.inet_ntoa(socket.inet_aton(bare))  # pure parsing, no network
        except OSError:
            return None
    return None


def is_localhost_name(host: str) -> bool:
    """``localhost``, ``localhost.`` and ``*.localhost``: loopback by definition (RFC 6761)."""
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


def check_url(url: str, *, allow_private: bool) -> str:
    """Refuse a URL by its form and, when its host is an IP literal or a
    localhost name, by its address; returns the host. Other names are checked
    once resolved (``GuardedResolver``, ``check_resolved``)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise AddressRefused("not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AddressRefused("must be an http(s) URL with a host")
    host = parts.hostname
    if is_localhost_name(host):
        if not allow_private:
            raise AddressRefused(
                f"{host} is a loopback name (private targets are not allowed here)"
            )
        return host
    if (ip := literal_ip(host)) is not None:
        check_address(ip, allow_private=allow_private)
    return host


async def check_resolved(url: str, *, allow_private: bool) -> None:
    """``check_url``, and for a host name every address it resolves to now
    (the local resolver, bounded): refusing at submit time what delivery
    would refuse later."""
    host = check_url(url, allow_private=allow_private)
    if is_localhost_name(host) or literal_ip(host) is not None:
        return
    resolver = GuardedResolver(allow_private=allow_private)
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            await resolver.resolve(host, 0, socket.AF_UNSPEC)
    except (OSError, TimeoutError):
        raise AddressRefused(f"{host} does not resolve") from None
    finally:
        await resolver.close()


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that refuses disallowed addresses before connecting;
    localhost names answer loopback without DNS."""

    def __init__(self, *, allow_private: bool) -> None:
        self._inner = DefaultResolver()
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if is_localhost_name(host):
            if not self._allow_private:
                raise AddressRefused(f"{host} is a loopback name (private targets not allowed)")
            return [_loopback(port)]
        results = await self._inner.resolve(host, port, family)
        for result in results:
            check_address(result["host"], allow_private=self._allow_private)
        return results

    async def close(self) -> None:
        await self._inner.close()


def _loopback(port: int) -> ResolveResult:
    return ResolveResult(
        hostname="localhost",
        host="127.0.0.1",
        port=port,
        family=socket.AF_INET,
        proto=0,
        flags=socket.AI_NUMERICHOST,
    )
