"""Server-Sent Events for a job (A5): live, replayed, resumed, ended.

One test runs the real tiny.en model on fox.wav; the others stop the worker and
play it themselves through the store, as a worker in another process would
(publishing nothing in this one), which also proves the poll fallback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import ClientResponse

from sona.api.sse import PING, sse_frames
from sona.app import create_app
from sona.events import JobUpdate, follow
from sona.jobs import Job, Segment, Status, TranscribeOptions
from sona.keys import EVENTS, STORE
from sona.store import Claim, JobStore
from tests.helpers import idle_app, submit

STEP_S = 10  # generous: the store is polled every second


@dataclass
class Event:
    event: str
    data: dict[str, Any]
    id: str | None


async def sse(resp: ClientResponse) -> AsyncIterator[Event]:
    """Parse an event stream; comments (pings) are skipped."""
    fields: dict[str, str] = {}
    async for raw in resp.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith(":"):
            continue
        if line:
            name, _, value = line.partition(": ")
            fields[name] = value
        elif fields:
            yield Event(fields["event"], json.loads(fields["data"]), fields.get("id"))
            fields = {}


async def read_all(resp: ClientResponse) -> list[Event]:
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "text/event-stream"
    async with asyncio.timeout(120):
        return [e async for e in sse(resp)]


async def next_event(events: AsyncIterator[Event]) -> Event:
    async with asyncio.timeout(STEP_S):
        return await anext(events)


async def claim(store: JobStore) -> Claim:
    got = await store.claim(worker_id="test:1:x", prefer_models=[], lease_s=60)
    assert got is not None
    return got


def seg(index: int, text: str) -> Segment:
    return Segment(index=index, start=float(index), end=index + 0.9, text=text)


async def test_full_stream_then_replay_of_the_finished_job(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path, manifest: dict[str, Any]
) -> None:
    client = await aiohttp_client(create_app(make_settings()))
    job = await submit(client, fox_wav)
    url = f"/v1/jobs/{job['id']}/events"
    live = await read_all(await client.get(url))

    assert live[0].event == "status" and live[0].data["id"] == job["id"]
    assert live[-1].event == "completed" and live[-1].data["status"] == "completed"
    assert all(e.event in ("status", "progress", "segment") for e in live[1:-1])
    segments = [e for e in live if e.event == "segment"]
    assert segments, "fox.wav has speech"
    assert [e.id for e in segments] == [str(i) for i in range(1, len(segments) + 1)]
    assert [e.data["id"] for e in segments] == list(range(len(segments)))
    text = " ".join(e.data["text"].strip() for e in segments)
    assert text == live[-1].data["text"]
    assert all(word in text.lower() for word in manifest["fox.wav"]["keywords"])
    assert set(segments[0].data) >= {"seek", "start", "end", "tokens", "avg_logprob"}

    # A finished job replays everything from the store, then ends.
    replay = await read_all(await client.get(url))
    assert [e.event for e in replay] == ["status"] + ["segment"] * len(segments) + ["completed"]
    assert [e.data for e in replay[1:-1]] == [e.data for e in segments]
    assert replay[0].data["status"] == "completed"

    # Last-Event-ID: N resumes after segment N.
    n = len(segments)
    tail = await read_all(await client.get(url, headers={"Last-Event-ID": str(n - 1)}))
    assert [(e.event, e.id) for e in tail] == [("status", None), ("segment", str(n)),
                                               ("completed", None)]  # fmt: skip
    done = await read_all(await client.get(url, headers={"Last-Event-ID": str(n)}))
    assert [e.event for e in done] == ["status", "completed"]


async def test_live_updates_from_another_process_and_resume_after_reconnect(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    client = await idle_app(aiohttp_client, make_settings)
    store = client.app[STORE]
    job = await submit(client, fox_wav)
    url = f"/v1/jobs/{job['id']}/events"

    resp = await client.get(url)
    events = sse(resp)
    first = await next_event(events)
    assert (first.event, first.data["status"]) == ("status", "queued")
    # A worker elsewhere writes to the store and publishes nothing here.
    run = await claim(store)
    processing = await next_event(events)
    assert (processing.event, processing.data["status"]) == ("status", "processing")
    await store.set_info(run, duration=8.0, language="en")
    await store.add_chunks(
        run, first=0, count=1, segments=[seg(0, " One."), seg(1, " Two.")], processed_seconds=2.0
    )
    got = [await next_event(events)]
    while got[-1].event != "progress" or got[-1].data["segments_done"] < 2:
        got.append(await next_event(events))
    # A poll may land between the two writes: then an earlier progress shows too.
    assert {e.event for e in got} == {"segment", "progress"}
    segments = [(e.id, e.data["text"]) for e in got if e.event == "segment"]
    assert segments == [("1", " One."), ("2", " Two.")]
    assert got[-1].data == {
        "progress": 0.25,
        "processed_seconds": 2.0,
        "duration": 8.0,
        "segments_done": 2,
    }
    resp.close()  # the client drops; the job goes on

    await store.add_chunks(
        run, first=1, count=1, segments=[seg(2, " Three.")], processed_seconds=3.0
    )
    await store.finish(run, Status.COMPLETED)
    again = await read_all(await client.get(url, headers={"Last-Event-ID": "2"}))
    assert [(e.event, e.id) for e in again] == [("status", None), ("segment", "3"),
                                                ("completed", None)]  # fmt: skip
    assert again[-1].data["text"] == "One. Two. Three."


async def test_cancelled_job_ends_the_stream_with_cancelled(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    client = await idle_app(aiohttp_client, make_settings)
    job = await submit(client, fox_wav)
    resp = await client.get(f"/v1/jobs/{job['id']}/events")
    events = sse(resp)
    assert (await next_event(events)).data["status"] == "queued"
    assert (await client.delete(f"/v1/jobs/{job['id']}")).status == 200
    last = await next_event(events)
    assert (last.event, last.data["status"]) == ("cancelled", "cancelled")
    async with asyncio.timeout(STEP_S):
        assert [e async for e in events] == []  # the stream has ended


async def test_unknown_job_and_bad_requests_get_openai_errors(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    client = await idle_app(aiohttp_client, make_settings)
    resp = await client.get("/v1/jobs/nope/events")
    body = await resp.json()
    assert resp.status == 404 and resp.content_type == "application/json"
    assert body["error"]["code"] == "not_found" and body["error"]["type"] == "not_found_error"
    assert set(body["error"]) == {"message", "type", "code", "param"}
    bad_id = await client.get("/v1/jobs/no%20spaces/events")
    assert bad_id.status == 400
    job = await submit(client, fox_wav)
    bad_resume = await client.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": "x"})
    assert bad_resume.status == 400
    assert (await bad_resume.json())["error"]["param"] == "Last-Event-ID"


async def test_client_going_away_ends_the_subscription(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    client = await idle_app(aiohttp_client, make_settings)
    hub = client.app[EVENTS]
    job = await submit(client, fox_wav)
    resp = await client.get(f"/v1/jobs/{job['id']}/events")
    await next_event(sse(resp))
    assert job["id"] in hub._subs
    resp.close()
    for _ in range(STEP_S * 20):  # the handler notices on its next quiet poll
        if job["id"] not in hub._subs:
            break
        await asyncio.sleep(0.05)
    assert job["id"] not in hub._subs
    assert (await client.get("/health")).status == 200


async def test_follow_wakes_on_hub_events_without_waiting_for_the_poll(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    client = await idle_app(aiohttp_client, make_settings)
    app = client.app
    job = await submit(client, fox_wav)
    run = await claim(app[STORE])
    updates = follow(app[STORE], app[EVENTS], job["id"], poll_s=3600)
    async with aclosing(updates), asyncio.timeout(STEP_S):
        assert (await anext(updates)).type == "status"
        # Park the follower on the hub first; with an hour-long poll only a
        # wake-up can bring the next update.
        pending = asyncio.ensure_future(anext(updates))
        await asyncio.sleep(0.2)
        await app[STORE].add_chunks(
            run, first=0, count=1, segments=[seg(0, " Hi.")], processed_seconds=1.0
        )
        app[EVENTS].publish(job["id"], "segment", {"index": 0})
        update = await pending
        assert update.type == "segment" and update.segment == seg(0, " Hi.")
        assert (await anext(updates)).type == "progress"
        pending = asyncio.ensure_future(anext(updates))
        await asyncio.sleep(0.2)
        await app[STORE].finish(run, Status.COMPLETED)
        app[EVENTS].publish(job["id"], "completed", {})
        assert (await pending).type == "completed"
        assert [u async for u in updates] == []


def fake_job() -> Job:
    return Job(
        id="j1", status=Status.PROCESSING, options=TranscribeOptions(), model="tiny.en",
        priority=0, file_path="/nowhere", file_name="a.wav", file_sha256="0", file_size=1,
        created_at=0.0,
    )  # fmt: skip


async def test_heartbeat_is_a_comment_sent_only_after_silence() -> None:
    job = fake_job()

    async def updates() -> AsyncIterator[JobUpdate]:
        for kind in ("status", "idle", "idle"):
            yield JobUpdate(kind, job)

    eager = [c async for c in sse_frames(updates(), heartbeat_s=0)]
    assert eager[0].startswith(b"event: status\ndata: {") and eager[1:] == [PING, PING]
    lazy = [c async for c in sse_frames(updates(), heartbeat_s=3600)]
    assert lazy[1:] == [b"", b""]
