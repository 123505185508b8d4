"""JSON from clients under size and depth limits: 400/413, never 500."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from sona.api.json_input import MAX_JSON_BYTES, MAX_JSON_DEPTH, depth_exceeds, loads
from sona.errors import InvalidRequest, PayloadTooLarge
from tests.helpers import audio_form, idle_app

DEEP = "[" * 100_000  # RecursionError in json.loads before the limits


def test_loads_refuses_deep_and_large_json() -> None:
    with pytest.raises(InvalidRequest, match="deeper"):
        loads(DEEP)
    with pytest.raises(InvalidRequest, match="deeper"):
        loads("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
    assert loads("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH) is not None
    with pytest.raises(PayloadTooLarge):
        loads(" " * (MAX_JSON_BYTES + 1))
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        loads(b"\xff{")
    assert not depth_exceeds({"a": [1, {"b": 2}]}, 3) and depth_exceeds({"a": [1, {"b": [2]}]}, 3)


@pytest.mark.parametrize(
    "path", ["/v1/jobs", "/v1/models/load"], ids=["submit-by-url", "model-load"]
)
@pytest.mark.parametrize(
    "body,status",
    [
        (DEEP, 400),
        ('{"model": ' + "[" * 50 + "]" * 50 + "}", 400),
        ('{"url": "http://127.0.0.1/a.wav", "metadata": {"a": ' + "[" * 40 + "]" * 40 + "}}", 400),
        ("{" + " " * (MAX_JSON_BYTES + 10) + "}", 413),
        ("not json", 400),
    ],
    ids=["brackets-100k", "deep-value", "deep-metadata", "too-large", "not-json"],
)
async def test_json_bodies_are_refused_cleanly(
    aiohttp_client: Any, make_settings: Any, path: str, body: str, status: int
) -> None:
    client = await idle_app(aiohttp_client, make_settings)
    data = io.BytesIO(body.encode())  # aiohttp warns about large raw bodies
    resp = await client.post(path, data=data, headers={"Content-Type": "application/json"})
    answer = await resp.json()
    assert resp.status == status, answer
    assert answer["error"]["code"] in ("invalid_request", "file_too_large")
    assert (await client.get("/health")).status == 200


async def test_deep_metadata_form_field_is_400(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    client = await idle_app(aiohttp_client, make_settings)
    for metadata in (DEEP, '{"a": ' + "[" * 2000 + "]" * 2000 + "}"):
        resp = await client.post("/v1/jobs", data=audio_form(fox_wav, metadata=metadata))
        body = await resp.json()
        assert resp.status == 400 and body["error"]["param"] == "metadata", body
    assert list((make_settings().data_dir / "uploads").iterdir()) == []
