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
* the host judged is the host aiohttp dials: ``yarl``'s normalisation of the
  URL (NFKC and IDNA), so ``１２７.０.０.１`` or ``127。0。0。1`` is judged as
  ``127.0.0.1``; and a non-ASCII spelling of an IP address (fullwidth,
  circled or other-script digits, ideographic dots, their punycode) is refused
  in every mode: no real host is written that way;
* the connection goes to the address that was checked: ``GuardedConnector``
  checks every address in the very list it then dials, resolved names
  (``GuardedResolver``, so DNS cannot answer differently a second time) and IP
  literals alike (aiohttp never hands a literal to the resolver). The URL is
  left as it is, so the Host header and TLS SNI still name the host.

Refusals raise ``AddressRefused``; each caller turns it into its own error."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import unicodedata
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from sona.errors import AddressRefused

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
ALWAYS_REFUSED = [ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10")]
NAT64 = ipaddress.ip_network("64:ff9b::/96")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
RESOLVE_TIMEOUT_S = 5.0
# Full stops that NFKC leaves alone but IDNA (UTS 46) maps to ".".
IDEOGRAPHIC_STOPS = str.maketrans({"\u3002": ".", "\uff61": "."})


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


def dial_host(url: str) -> str:
    """The host aiohttp will connect to for ``url``: yarl's normalisation (the
    one ``ClientSession`` applies), trailing dots collapsed as the connector
    does. Raises AddressRefused when the URL cannot be used at all."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
        parsed = URL(url)
        parsed.port  # noqa: B018
    except (ValueError, UnicodeError):
        raise AddressRefused("not a valid URL") from None
    if parts.scheme not in ("http", "https") or parsed.scheme not in ("http", "https"):
        raise AddressRefused("must be an http(s) URL with a host")
    if not parts.hostname or not parsed.raw_host:
        raise AddressRefused("must be an http(s) URL with a host")
    host = parsed.raw_host
    plain_literal = parts.hostname.isascii() and literal_ip(host.rstrip(".")) is not None
    if _spells_ip(parsed.host or host) and not plain_literal:
        raise AddressRefused("a non-ASCII spelling of an IP address is not accepted")
    return host.rstrip(".") + "." if host.endswith("..") else host


def _spells_ip(host: str) -> bool:
    """Whether ``host`` reads as an IP address once every Unicode digit is read
    as its ASCII digit and every full stop as ".": ``١٢٧.٠.٠.١`` does."""
    text = unicodedata.normalize("NFKC", host).translate(IDEOGRAPHIC_STOPS)
    ascii_form = "".join(
        str(d) if (d := unicodedata.decimal(c, None)) is not None else c for c in text
    )
    return literal_ip(ascii_form.rstrip(".")) is not None


def check_url(url: str, *, allow_private: bool) -> str:
    """Refuse a URL by its form and, when the host it dials is an IP literal or
    a localhost name, by its address; returns that host. Other names are
    checked once resolved (``GuardedResolver``, ``check_resolved``)."""
    host = dial_host(url)
    if is_localhost_name(host):
        if not allow_private:
            raise AddressRefused(
                f"{host} is a loopback name (private targets are not allowed here)"
            )
        return host
    if (ip := literal_ip(host.rstrip("."))) is not None:
        check_address(ip, allow_private=allow_private)
    return host


async def check_resolved(url: str, *, allow_private: bool) -> None:
    """``check_url``, and for a host name every address it resolves to now
    (the local resolver, bounded): refusing at submit time what delivery
    would refuse later."""
    host = check_url(url, allow_private=allow_private)
    if is_localhost_name(host) or literal_ip(host.rstrip(".")) is not None:
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


class GuardedConnector(aiohttp.TCPConnector):
    """The connector for every outbound request (URL fetch, webhooks): it checks
    each address it is about to dial. ``_resolve_host`` is where aiohttp turns
    the URL's host into that list, for names (through ``GuardedResolver``, which
    answers localhost names) and for IP literals, which it returns as they are
    without asking the resolver; ``tests/test_netguard.py`` dials a literal to
    keep this hook honest across aiohttp upgrades."""

    def __init__(self, *, allow_private: bool, **kwargs: Any) -> None:
        super().__init__(resolver=GuardedResolver(allow_private=allow_private), **kwargs)
        self._allow_private = allow_private

    async def _resolve_host(
        self, host: str, port: int, traces: Sequence[Any] | None = None
    ) -> list[ResolveResult]:
        results = await super()._resolve_host(host, port, traces=traces)
        for result in results:
            check_address(result["host"], allow_private=self._allow_private)
        return results


def _loopback(port: int) -> ResolveResult:
    return ResolveResult(
        hostname="localhost",
        host="127.0.0.1",
        port=port,
        family=socket.AF_INET,
        proto=0,
        flags=socket.AI_NUMERICHOST,
    )
