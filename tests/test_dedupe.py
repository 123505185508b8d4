"""Dedupe (A11, opt-in): a submission whose file hash and options equal a
completed job's is answered from it at once, marked ``cached``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sona.app import create_app
from tests.helpers import submit, wait_done


async def transcript(client: Any, job_id: str) -> Any:
    resp = await client.get(f"/v1/jobs/{job_id}/transcript", params={"format": "verbose_json"})
    assert resp.status == 200
    return await resp.json()


async def test_same_file_and_options_is_answered_from_the_completed_job(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    client = await aiohttp_client(create_app(make_settings(dedupe=True)))
    first = await wait_done(client, (await submit(client, fox_wav))["id"])
    assert first["status"] == "completed" and not first["cached"]
    again = await submit(client, fox_wav, metadata='{"mine": 1}')
    # Completed in the answer itself: no run, its own id and metadata.
    assert again["status"] == "completed" and again["cached"] and again["attempts"] == 0
    assert again["id"] != first["id"] and again["metadata"] == {"mine": 1}
    assert again["text"] == first["text"] and again["duration"] == first["duration"]
    assert (await transcript(client, again["id"])) == (await transcript(client, first["id"]))
    # Other options, or a request that opts out, run for real.
    other = await wait_done(client, (await submit(client, fox_wav, word_timestamps="true"))["id"])
    assert other["status"] == "completed" and not other["cached"] and other["attempts"] == 1
    fresh = await wait_done(client, (await submit(client, fox_wav, dedupe="false"))["id"])
    assert not fresh["cached"] and fresh["attempts"] == 1
    # Each job keeps its own upload: deleting one never takes the other's audio.
    audio = await client.get(f"/v1/jobs/{again['id']}/audio")
    expected = await asyncio.to_thread(fox_wav.read_bytes)
    assert audio.status == 200 and await audio.read() == expected


async def test_dedupe_is_off_unless_asked(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    client = await aiohttp_client(create_app(make_settings()))
    first = await wait_done(client, (await submit(client, fox_wav))["id"])
    plain = await wait_done(client, (await submit(client, fox_wav))["id"])
    assert not plain["cached"] and plain["attempts"] == 1
    asked = await submit(client, fox_wav, dedupe="true")
    assert asked["cached"] and asked["text"] == first["text"]
