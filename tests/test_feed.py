"""The all-jobs feed (``GET /v1/events``, api/feed.py) and the dashboard's plain
HTTP side (api/dashboard.py): page, assets, retained audio with Range.

The worker is stopped and the tests change jobs through the store, as a worker
in another process would (publishing nothing here): the feed must still see it."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from pydantic import SecretStr

from sona.jobs import Segment, Status
from sona.keys import STORE
from tests.helpers import idle_app, submit
from tests.test_job_events import Event, claim, sse

STEP_S = 10  # generous: the store is polled every second


async def next_event(events: AsyncIterator[Event], skip: tuple[str, ...] = ()) -> Event:
    async with asyncio.timeout(STEP_S):
        while True:
            event = await anext(events)
            if event.event not in skip:
                return event


def conforms(spec: dict[str, Any], schema: str, body: Any) -> None:
    root = {"$ref": f"#/components/schemas/{schema}", "components": spec["components"]}
    Draft202012Validator(root).validate(body)


async def test_feed_snapshot_then_changes_made_by_another_process(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    client = await idle_app(aiohttp_client, make_settings)
    spec = await (await client.get("/openapi.json")).json()
    old = await submit(client, fox_wav)
    resp = await client.get("/v1/events")
    assert resp.status == 200 and resp.content_type == "text/event-stream"
    assert (await resp.content.readline()) == b"retry: 2000\n"
    events = sse(resp)
    snap = await next_event(events)
    assert snap.event == "snapshot" and snap.id is not None
    conforms(spec, "FeedSnapshotOut", snap.data)
    assert [j["id"] for j in snap.data["jobs"]] == [old["id"]]
    assert snap.data["state"]["queue_size"] == 1 and snap.data["last_event_id"] is None
    assert snap.data["state"]["worker_running"] is False

    # A new job appears, and the queue depth follows.
    new = await submit(client, fox_wav)
    got = await next_event(events)
    assert (got.event, got.data["id"], got.data["status"]) == ("job", new["id"], "queued")
    conforms(spec, "JobOut", got.data)
    state = await next_event(events)
    assert state.event == "state" and state.data["queue_size"] == 2
    conforms(spec, "FeedStateOut", state.data)

    # Progress written straight into the store (no hub event) still arrives.
    store = client.app[STORE]
    c = await claim(store)
    assert c.job.id == old["id"]
    await store.set_info(c, duration=8.0, language="en")
    fox = Segment(0, 0.0, 2.0, " The quick brown fox")
    await store.add_chunks(c, first=0, count=1, segments=[fox], processed_seconds=4.0)
    seen = await next_event(events, skip=("state",))
    while seen.data["processed_seconds"] < 4.0:
        seen = await next_event(events, skip=("state",))
    assert seen.event == "job" and seen.data["status"] == "processing"
    assert seen.data["progress"] == 0.5 and "quick brown fox" in seen.data["text"]
    await store.finish(c, Status.COMPLETED)
    done = await next_event(events, skip=("state",))
    while done.data["id"] == new["id"]:  # its queue_position moved as the old job left
        done = await next_event(events, skip=("state",))
    assert (done.data["id"], done.data["status"]) == (old["id"], "completed")
    ids = [int(e.id or 0) for e in (snap, got, state, seen, done)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)

    # Retention deletes a job: the feed says so.
    await store.delete(old["id"])
    removed = await next_event(events, skip=("state",))
    assert (removed.event, removed.data) == ("removed", {"id": old["id"]})
    resp.close()


async def test_reconnect_with_last_event_id_gets_a_fresh_snapshot(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    client = await idle_app(aiohttp_client, make_settings)
    first = await client.get("/v1/events")
    snap = await next_event(sse(first))
    first.close()
    job = await submit(client, fox_wav)  # while the client was away
    again = await client.get("/v1/events", headers={"Last-Event-ID": snap.id or ""})
    resumed = await next_event(sse(again))
    again.close()
    assert resumed.event == "snapshot" and resumed.data["last_event_id"] == snap.id
    assert [j["id"] for j in resumed.data["jobs"]] == [job["id"]]
    assert int(resumed.id or 0) > int(snap.id or 0)


async def test_feed_shows_every_active_job_beyond_the_newest(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    from sona.api import feed

    client = await idle_app(aiohttp_client, make_settings)
    jobs = [await submit(client, fox_wav) for _ in range(4)]
    for job in jobs[1:]:
        await client.delete(f"/v1/jobs/{job['id']}")
    in_view = await feed.jobs_in_view(client.app[STORE], window=2)
    # The two newest (cancelled) and the oldest, still queued.
    assert [j.id for j in in_view] == [jobs[3]["id"], jobs[2]["id"], jobs[0]["id"]]


async def test_a_job_finishing_beyond_the_window_is_still_reported(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    from contextlib import aclosing

    from sona.api import feed
    from sona.keys import EVENTS

    client = await idle_app(aiohttp_client, make_settings)
    old, new = await submit(client, fox_wav), await submit(client, fox_wav)

    async def no_state() -> dict[str, Any]:
        return {}

    source = feed.FeedSource(client.app[STORE], client.app[EVENTS], no_state, window=1)
    updates = feed.watch(source)
    async with aclosing(updates), asyncio.timeout(STEP_S):
        snap = await anext(updates)
        # The old job is in view only while it is queued (active).
        assert [j["id"] for j in snap.data["jobs"]] == [new["id"], old["id"]]
        await client.delete(f"/v1/jobs/{old['id']}")
        update = await anext(updates)
        while update.type != "job":
            update = await anext(updates)
        assert (update.data["id"], update.data["status"]) == (old["id"], "cancelled")
    await source.stop()


async def test_dashboard_page_and_assets_are_packaged_and_open(
    aiohttp_client: Any, make_settings: Any
) -> None:
    client = await idle_app(aiohttp_client, make_settings, api_keys=[SecretStr("k")])
    page = await client.get("/")
    assert page.status == 200 and page.content_type == "text/html"
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    html = await page.text()
    links = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert not [x for x in links if re.match(r"^([a-z]+:)?//", x)], links
    assert {"dashboard/dashboard.js", "dashboard/dashboard.css", "dashboard/live.js"} <= set(links)
    assets = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
    assets |= {"live.js": "text/javascript", "live-worklet.js": "text/javascript"}
    for name, ctype in assets.items():
        resp = await client.get(f"/dashboard/{name}")
        assert resp.status == 200 and resp.content_type == ctype
        assert not re.search(r"https?://", await resp.text()), f"{name} reaches out"
    auth = {"Authorization": "Bearer k"}
    for path in ("/dashboard/secret.txt", "/dashboard/..%2Fapp.py"):
        assert (await client.get(path)).status == 401  # only the named assets are open
        assert (await client.get(path, headers=auth)).status == 404
    # The data is not open: the page asks for the key and sends it.
    assert (await client.get("/v1/events")).status == 401
    feed = await client.get("/v1/events", headers=auth)
    assert feed.status == 200
    feed.close()
    # The loopback Host check covers the page too.
    evil = await client.get("/", headers={"Host": "evil.example"})
    assert evil.status == 403


async def test_audio_of_a_job_plays_with_range_while_retained(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    client = await idle_app(aiohttp_client, make_settings)
    job = await submit(client, fox_wav)
    whole = await client.get(f"/v1/jobs/{job['id']}/audio")
    body = await whole.read()
    assert whole.status == 200 and whole.content_type == "audio/wav"
    assert body == await asyncio.to_thread(fox_wav.read_bytes)
    part = await client.get(f"/v1/jobs/{job['id']}/audio", headers={"Range": "bytes=100-199"})
    assert part.status == 206 and await part.read() == body[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(body)}"
    assert (await client.get("/v1/jobs/nope/audio")).status == 404
    stored = (await client.app[STORE].get(job["id"])).file_path
    await asyncio.to_thread(Path(stored).unlink)
    gone = await client.get(f"/v1/jobs/{job['id']}/audio")
    assert gone.status == 404 and "no longer retained" in (await gone.json())["error"]["message"]


async def test_feed_ends_cleanly_when_the_daemon_shuts_down(
    aiohttp_client: Any, make_settings: Any
) -> None:
    """The feed never ends by itself; at shutdown it must, or the daemon's exit
    would wait for aiohttp's shutdown timeout and then cut it."""
    client = await idle_app(aiohttp_client, make_settings)
    resp = await client.get("/v1/events")
    events = sse(resp)
    assert (await next_event(events)).event == "snapshot"
    closing = asyncio.create_task(client.server.close())
    async with asyncio.timeout(5):
        rest = [e async for e in events]  # a cut stream would raise here
        await closing
    assert all(e.event in ("job", "state") for e in rest), rest


# RELIABILITY 31: slow and idle event-stream readers.


async def _until(check: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)


def test_r31_a_follower_that_never_reads_holds_one_flag_whatever_the_events() -> None:
    """The hub gives followers (the feed's reader, a job's followers) a flag,
    not a queue: 100,000 events for a follower that never looks leave memory
    where it was (a queue of them would hold tens of MB)."""
    import tracemalloc

    from sona.events import EventHub

    async def run() -> int:
        hub = EventHub()
        with hub.wakeups() as any_job, hub.subscribe("job1") as one_job:
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            for n in range(100_000):
                hub.publish("job1", "segment", {"index": n, "text": "x" * 50})
            grown = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
            assert any_job.is_set() and one_job.is_set()
        return grown

    assert asyncio.run(run()) < 256 * 1024


async def test_r31_idle_feed_readers_cost_no_wake_ups_and_share_one_poll(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    from sona.api.feed import FEED

    client = await idle_app(aiohttp_client, make_settings)
    await submit(client, fox_wav)
    source = client.app[FEED]
    readers = [await client.get("/v1/events") for _ in range(20)]
    for resp in readers:
        assert (await next_event(sse(resp))).event == "snapshot"
    start = source.polls
    await _until(lambda: source.polls >= start + 2)  # the first read after they joined
    wakes, polls = source.wakes, source.polls
    await asyncio.sleep(3)  # nothing happens meanwhile
    # No stream woke; the store was read about once a second for all 20 of
    # them together (per-stream polling would be 60 reads).
    assert source.wakes == wakes
    assert source.polls - polls <= 6
    for resp in readers:
        resp.close()


async def test_r31_a_feed_reader_that_never_reads_is_dropped_with_a_reconnect_event(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    import socket

    from sona.api.feed import FEED

    client = await idle_app(aiohttp_client, make_settings)
    await submit(client, fox_wav)
    store = client.app[STORE]
    c = await claim(store)
    # A transcript of 8 MB: every frame with the job is larger than all the
    # socket buffers between the daemon and a client that reads nothing.
    big = Segment(0, 0.0, 2.0, "word " * (8 * 1024 * 1024 // 5))
    await store.add_chunks(c, first=0, count=1, segments=[big], processed_seconds=2.0)
    source = client.app[FEED]
    source.send_timeout_s = 1
    source.drop_grace_s = 30  # the test reads once the drop is decided
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", client.server.port))
    # A small limit: past it the stream reader stops taking bytes off the socket.
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    try:
        writer.write(b"GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await _until(lambda: source.dropped > 0)  # never reading, it falls behind
        assert source.listeners == 0  # its place in the feed is given up at once
        async with asyncio.timeout(60):
            got = await reader.read()  # now it reads: the rest, then the end
    finally:
        writer.close()
    tail = got[-300:]
    assert b"event: reconnect" in tail and b'"reason": "behind"' in tail, tail
    assert got.endswith(b"0\r\n\r\n")  # the chunked stream ended cleanly
