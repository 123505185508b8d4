"""``GET /v1/search`` over HTTP (the store side: test_store_search.py): its
parameters, its refusals (400, never 500), its pages, its schema."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from sona.keys import STORE
from tests.helpers import idle_app
from tests.test_openapi import conforms, fetch_spec
from tests.test_store_search import transcribed

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(aiohttp_client: Any, make_settings: Any) -> Client:
    return await idle_app(aiohttp_client, make_settings)


async def get(client: Client, query: str, status: int = 200) -> dict[str, Any]:
    resp = await client.get(f"/v1/search?{query}")
    body = await resp.json()
    assert resp.status == status, body
    return body


async def test_a_search_page_by_page_matches_the_spec(client: Client) -> None:
    store = client.app[STORE]
    ids = [await transcribed(store, [f" otter number {i}", " nothing"]) for i in range(5)]
    spec = await fetch_spec(client)
    seen: list[str] = []
    cursor = ""
    while True:
        page = await get(client, f"q=otter&limit=2{cursor}")
        conforms(spec, "SearchList", page)
        seen += [h["job_id"] for h in page["data"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert sorted(seen) == sorted(ids)
    hit = (await get(client, f"q=otter&job_id={ids[2]}"))["data"][0]
    assert hit["text"][hit["marks"][0][0] : hit["marks"][0][1]] == "otter"
    assert hit["created_at"].endswith("Z") and hit["segment"] == 0


async def test_filters_over_http(client: Client) -> None:
    store = client.app[STORE]
    a = await transcribed(store, [" lynx"], metadata={"team": "ops"}, language="de")
    b = await transcribed(store, [" lynx"], metadata={"team": "dev"})
    created = (await store.get(b)).created_at

    async def ids(extra: str) -> set[str]:
        return {h["job_id"] for h in (await get(client, f"q=lynx{extra}"))["data"]}

    assert await ids("") == {a, b}
    assert await ids("&metadata.team=ops") == {a}
    assert await ids("&language=de") == {a}
    assert await ids(f"&created_after={created}") == {b}
    assert await ids("&created_before=1970-01-02T00:00:00") == set()
    assert await ids("&created_after=2000-01-01T00:00:00Z") == {a, b}


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("", "q"),
        ("q=", "q"),
        ("q=%22unbalanced", "q"),
        ("q=*", "q"),
        ("q=" + "a" * 501, "q"),
        ("q=a&limit=0", "limit"),
        ("q=a&limit=x", "limit"),
        ("q=a&cursor=nope", "cursor"),
        ("q=a&cursor=" + "W1tb" * 1000, "cursor"),  # "[[[…": never parsed
        ("q=a&cursor=" + quote("W05hTiwgImEiLCAxXQ"), "cursor"),  # [NaN, "a", 1]
        ("q=a&job_id=../x", "job_id"),
        ("q=a&language=" + quote("en'; --"), "language"),
        ("q=a&created_after=tomorrow", "created_after"),
        ("q=a&created_before=inf", "created_before"),
        ("q=a&metadata.k=" + quote("\x00"), "metadata"),
    ],
)
async def test_refusals_are_400_naming_the_parameter(
    client: Client, query: str, param: str
) -> None:
    body = await get(client, query, 400)
    assert body["error"]["param"] == param
    if param == "q" and query.startswith("q=%22"):
        assert body["error"]["code"] == "invalid_query"


async def test_search_takes_the_same_api_key_and_rate_limit_as_every_route(
    aiohttp_client: Any, make_settings: Any
) -> None:
    client = await idle_app(
        aiohttp_client,
        make_settings,
        api_keys=[SecretStr("s3cret")],
        rate_limit_per_s=0.01,
        rate_limit_burst=2,
    )
    denied = await client.get("/v1/search?q=x")
    assert denied.status == 401
    auth = {"Authorization": "Bearer s3cret"}
    statuses = [(await client.get("/v1/search?q=x", headers=auth)).status for _ in range(3)]
    assert 200 in statuses and statuses[-1] == 429
