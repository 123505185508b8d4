"""RELIABILITY 27: Unicode and IDNA spellings of refused addresses, for URL
fetch and webhooks. yarl (and so aiohttp) reads ``１２７.０.０.１`` as
``127.0.0.1``; the rules judge the host that is dialled, refuse every non-ASCII
spelling of an IP address, and check IP literals at connect time too. The
loopback listener counts what reaches it: nothing, in refusing mode."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sona.app import create_app
from sona.errors import AddressRefused
from sona.netguard import GuardedConnector, check_url
from tests.helpers import audio_form
from tests.webhook_receiver import Receiver

# Every one of these is 127.0.0.1 (or localhost) to a careless reader.
LOOPBACK_SPELLINGS = [
    "１２７.０.０.１",  # fullwidth digits
    "１２７.0.0.1",  # fullwidth and ASCII mixed
    "127。0。0。1",  # ideographic full stops
    "127．0．0．1",  # fullwidth full stops
    "127｡0｡0｡1",  # halfwidth ideographic full stops
    "①②⑦.0.0.1",  # circled digits
    "𝟏𝟐𝟕.0.0.1",  # mathematical bold digits
    "١٢٧.٠.٠.١",  # Arabic-Indic digits
    "१२७.०.०.१",  # Devanagari digits
    "１２７.0.0.١",  # mixed scripts
    "xn--9hbcp.xn--8hb.xn--8hb.xn--9hb",  # the punycode (IDNA) of the Arabic-Indic one
    "XN--9HBCP.xn--8hb.xn--8hb.xn--9hb",
    "127.0.0.1.",  # trailing dots
    "127.0.0.1..",
    "１２７.０.０.１.",
    "127。0。0。1。",
    "0x7f.1.",
    "ｌｏｃａｌｈｏｓｔ",  # a fullwidth localhost name
    "ＬＯＣＡＬＨＯＳＴ.",
]
METADATA_SPELLINGS = [
    "１６９.２５４.１６９.２５４",
    "⑯⑨.２５４.１６９.２５４",
    "169。254。169。254",
]


@pytest.fixture
def listener() -> Iterator[Receiver]:
    with Receiver([]).running() as rx:
        yield rx


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS + METADATA_SPELLINGS)
def test_r27_the_rules_refuse_every_spelling_without_a_connection(host: str) -> None:
    with pytest.raises(AddressRefused):
        check_url(f"http://{host}:8080/a.wav", allow_private=False)


NON_ASCII_ADDRESSES = [h for h in LOOPBACK_SPELLINGS if not h.isascii() and "ＯＣ" not in h.upper()]


@pytest.mark.parametrize("host", NON_ASCII_ADDRESSES + METADATA_SPELLINGS)
def test_r27_non_ascii_spellings_of_addresses_are_refused_in_every_mode(host: str) -> None:
    with pytest.raises(AddressRefused, match="non-ASCII spelling"):
        check_url(f"http://{host}/a.wav", allow_private=True)


@pytest.mark.parametrize(
    "host", ["example.com", "bücher.example", "ｅｘａｍｐｌｅ.com", "ⅰ27.example"]
)
def test_r27_names_in_any_script_still_pass_to_the_resolver(host: str) -> None:
    check_url(f"http://{host}/a.wav", allow_private=False)  # refused later only by address


async def test_r27_fetch_refuses_every_spelling_before_connecting(
    aiohttp_client: Any, make_settings: Any, listener: Receiver
) -> None:
    client = await aiohttp_client(create_app(make_settings(model=None, allow_private_urls=False)))
    for host in LOOPBACK_SPELLINGS + METADATA_SPELLINGS:
        resp = await client.post("/v1/jobs", json={"url": f"http://{host}:{listener.port}/a.wav"})
        body = await resp.json()
        assert resp.status == 422 and body["error"]["code"] == "url_refused", (host, body)
    assert (await (await client.get("/v1/jobs")).json())["data"] == []
    await asyncio.sleep(0.3)
    assert listener.hits == []


async def test_r27_callbacks_refuse_every_spelling_before_connecting(
    aiohttp_client: Any, make_settings: Any, listener: Receiver, fox_wav: Path
) -> None:
    client = await aiohttp_client(create_app(make_settings(model=None, allow_private_urls=False)))
    for host in LOOPBACK_SPELLINGS + METADATA_SPELLINGS:
        callback = f"http://{host}:{listener.port}/hook"
        resp = await client.post("/v1/jobs", data=audio_form(fox_wav, callback_url=callback))
        body = await resp.json()
        assert resp.status == 422, (host, body)
        assert body["error"]["code"] == "invalid_callback_url", (host, body)
    assert (await (await client.get("/v1/jobs")).json())["data"] == []
    await asyncio.sleep(0.3)
    assert listener.hits == []


async def test_r27_the_metadata_address_in_fullwidth_is_refused_in_every_mode(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    client = await aiohttp_client(create_app(make_settings(model=None, allow_private_urls=True)))
    for host in METADATA_SPELLINGS:
        resp = await client.post("/v1/jobs", json={"url": f"http://{host}/latest/meta-data"})
        assert resp.status == 422, host
        callback = f"http://{host}/latest/meta-data"
        resp = await client.post("/v1/jobs", data=audio_form(fox_wav, callback_url=callback))
        assert resp.status == 422, host


@pytest.mark.parametrize("host", ["127.0.0.1", "[::ffff:127.0.0.1]", "localhost"])
async def test_r27_the_connector_checks_literals_at_connect_time(
    listener: Receiver, host: str
) -> None:
    """Past every check at submit time, the connector itself refuses a literal
    (aiohttp never hands one to the resolver); allowed, it connects."""
    url = f"http://{host}:{listener.port}/x"
    connector = GuardedConnector(allow_private=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(AddressRefused):
            await session.get(url)
    await asyncio.sleep(0.2)
    assert listener.hits == []
    connector = GuardedConnector(allow_private=True)
    async with aiohttp.ClientSession(connector=connector) as session, session.get(url) as resp:
        assert resp.status == 200
    assert len(listener.hits) == 1
