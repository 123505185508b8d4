"""The outbound address rules (E3) without any connection: literals, odd
spellings, IPv4 hidden in IPv6, localhost names. Names other than localhost
are resolved only by the guarded resolver, and only in the API tests."""

from __future__ import annotations

import pytest

from sona.errors import AddressRefused
from sona.netguard import GuardedResolver, check_address, check_resolved, check_url, literal_ip


@pytest.mark.parametrize(
    "spelling,ip",
    [
        ("0x7f000001", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("example.com", None),
        ("deadbeef", None),  # a name made of hex letters, not an address
    ],
)
def test_literal_spellings_are_parsed_without_dns(spelling: str, ip: str | None) -> None:
    assert literal_ip(spelling) == ip


@pytest.mark.parametrize(
    "ip",
    [
        "169.254.169.254",
        "fe80::1",
        "::ffff:169.254.169.254",  # IPv4-mapped
        "64:ff9b::a9fe:a9fe",  # NAT64 of the metadata address
        "2002:a9fe:a9fe::1",  # 6to4 of it
        "::169.254.169.254",  # IPv4-compatible
    ],
)
def test_link_local_is_refused_however_wrapped_even_when_private_allowed(ip: str) -> None:
    with pytest.raises(AddressRefused, match="link-local"):
        check_address(ip, allow_private=True)


@pytest.mark.parametrize(
    "ip", ["127.0.0.1", "10.1.2.3", "192.168.0.1", "100.64.0.1", "::1", "fc00::1", "0.0.0.0"]
)
def test_non_global_refused_unless_private_allowed(ip: str) -> None:
    with pytest.raises(AddressRefused, match="not a public address"):
        check_address(ip, allow_private=False)
    check_address(ip, allow_private=True)


@pytest.mark.parametrize("ip", ["8.8.8.8", "2001:4860:4860::8888"])
def test_public_addresses_pass(ip: str) -> None:
    check_address(ip, allow_private=False)


@pytest.mark.parametrize("host", ["localhost", "localhost.", "LOCALHOST", "api.localhost."])
def test_localhost_names_are_loopback_by_name(host: str) -> None:
    with pytest.raises(AddressRefused, match="loopback name"):
        check_url(f"http://{host}:8080/x", allow_private=False)
    assert check_url(f"http://{host}:8080/x", allow_private=True) == host.lower()


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/x", "file:///etc/passwd", "http:///x", "http://h:99999/x", "x"]
)
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(AddressRefused):
        check_url(url, allow_private=True)


async def test_resolver_answers_localhost_names_itself() -> None:
    resolver = GuardedResolver(allow_private=True)
    [result] = await resolver.resolve("localhost.", 8080)
    assert (result["host"], result["port"]) == ("127.0.0.1", 8080)
    with pytest.raises(AddressRefused):
        await GuardedResolver(allow_private=False).resolve("localhost.", 80)
    await check_resolved("http://localhost.:1/x", allow_private=True)
    await resolver.close()
