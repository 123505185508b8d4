"""Webhooks end to end, in process (E1–E3, RELIABILITY 21–22): a real receiver
on 127.0.0.1, the real tiny.en model where a job runs, signatures checked
with the ``standardwebhooks`` library."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from standardwebhooks import Webhook

from sona.app import create_app
from sona.dispatcher import Dispatcher, DispatcherConfig
from sona.store import DeliveryAttempt, DeliveryState
from sona.store.postgres import PostgresStore
from sona.webhooks import RetryPolicy, judge, retry_after_s, retryable_status, signer_for
from tests.helpers import audio_form, idle_app, submit, wait_done
from tests.pg import pg_schema_url
from tests.test_openapi import conforms, fetch_spec
from tests.test_store_contract import new_job

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


async def webhooks(client: TestClient, job_id: str) -> list[dict[str, Any]]:
    resp = await client.get(f"/v1/jobs/{job_id}/webhooks")
    assert resp.status == 200, await resp.text()
    return (await resp.json())["data"]


async def wait_state(client: TestClient, job_id: str, state: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        data = await webhooks(client, job_id)
        if data and data[0]["state"] == state:
            return data[0]
        assert time.monotonic() < deadline, data
        await asyncio.sleep(0.05)


async def past_a_retry(client: TestClient, receiver: Any, fox_wav: Path) -> None:
    """Wait until a first retry of a delivery that ended before now would have
    come: a later delivery fails twice, so its third attempt comes more than
    one full backoff after the earlier ones ended (jitter takes at most half of
    each wait), and the dispatcher sends what is due in order of due time."""
    marker = receiver(["500", "500", "200"])
    later = await queued_then_cancelled(client, fox_wav, marker.url)
    await wait_state(client, later, "delivered")


async def queued_then_cancelled(client: TestClient, fox_wav: Path, callback: str) -> str:
    """A job that ends at once without inference: queued on an idle app, cancelled."""
    job = await submit(client, fox_wav, callback_url=callback)
    resp = await client.delete(f"/v1/jobs/{job['id']}")
    assert (await resp.json())["status"] == "cancelled"
    return job["id"]


async def test_retries_on_schedule_with_one_id_and_valid_signatures(
    aiohttp_client: Any, make_settings: Any, receiver: Any, fox_wav: Path, manifest: dict
) -> None:
    """RELIABILITY 21: 500, a hang past the timeout, 429 with Retry-After, 301,
    then 200 — five attempts, one webhook-id, fresh signed timestamps."""
    rx = receiver(["500", "hang", "429:1", "301", "200"])
    settings = make_settings(webhook_secret=SECRET, webhook_backoff_s=0.2, webhook_timeout_s=1.0)
    client = await aiohttp_client(create_app(settings))
    job = await submit(client, fox_wav, callback_url=rx.url)
    done = await wait_done(client, job["id"])
    assert done["status"] == "completed"
    delivery = await wait_state(client, job["id"], "delivered")
    hits = rx.posts()
    assert [h.answer for h in hits] == ["500", "hang", "429:1", "301", "200"]
    assert rx.posts("/elsewhere") == []  # the redirect was not followed
    assert {h.headers["webhook-id"] for h in hits} == {delivery["id"]}
    for hit in hits:
        event = Webhook(SECRET).verify(hit.body, hit.headers)  # raises when wrong
        assert abs(int(hit.headers["webhook-timestamp"]) - hit.at) < 2  # fresh each time
    assert int(hits[-1].headers["webhook-timestamp"]) > int(hits[0].headers["webhook-timestamp"])
    assert hits[0].body == hits[-1].body  # one event, resent as it was
    # Backoff: at least half the doubling delay; after the 429, its Retry-After.
    assert hits[1].at - hits[0].at >= 0.1
    assert hits[3].at - hits[2].at >= 1.0
    assert event["type"] == "job.completed" and event["id"] == delivery["id"]
    data = event["data"]
    assert data["job_id"] == job["id"] and data["status"] == "completed" and data["error"] is None
    assert all(k in data["text"].lower() for k in manifest["fox.wav"]["keywords"])
    assert data["links"]["transcript"] == f"/v1/jobs/{job['id']}/transcript"
    assert [a["status_code"] for a in delivery["history"]] == [500, None, 429, 301, 200]
    assert "timed out" in delivery["history"][1]["error"]
    assert "not followed" in delivery["history"][3]["error"]
    assert delivery["attempts"] == 5 and delivery["next_attempt_at"] is None


async def test_410_disables_and_other_4xx_is_dead_at_once(
    aiohttp_client: Any, make_settings: Any, receiver: Any, fox_wav: Path
) -> None:
    gone, bad = receiver(["410"]), receiver(["400"])
    client = await idle_app(aiohttp_client, make_settings, webhook_backoff_s=0.1)
    first = await queued_then_cancelled(client, fox_wav, gone.url)
    second = await queued_then_cancelled(client, fox_wav, bad.url)
    disabled = await wait_state(client, first, "disabled")
    dead = await wait_state(client, second, "dead")
    await past_a_retry(client, receiver, fox_wav)  # no further attempt comes
    assert len(gone.posts()) == 1 and len(bad.posts()) == 1
    assert disabled["last_status_code"] == 410 and disabled["next_attempt_at"] is None
    assert dead["last_status_code"] == 400 and dead["attempts"] == 1
    event = json.loads(gone.posts()[0].body)
    assert event["type"] == "job.cancelled" and event["data"]["status"] == "cancelled"
    assert "webhook-signature" not in gone.posts()[0].headers  # no secret: unsigned
    scrape = await (await client.get("/metrics")).text()  # each outcome counted once
    assert 'sona_webhook_deliveries_total{outcome="disabled"} 1.0' in scrape
    assert 'sona_webhook_deliveries_total{outcome="failed"} 1.0' in scrape


async def test_attempts_run_out_and_the_dead_delivery_is_visible(
    aiohttp_client: Any, make_settings: Any, receiver: Any, fox_wav: Path
) -> None:
    rx = receiver(["503"] * 10)
    client = await idle_app(
        aiohttp_client, make_settings, webhook_backoff_s=0.05, webhook_max_attempts=3
    )
    job_id = await queued_then_cancelled(client, fox_wav, rx.url)
    dead = await wait_state(client, job_id, "dead")
    assert dead["attempts"] == 3 and dead["last_error"].startswith("HTTP 503")
    await asyncio.sleep(0.5)
    assert len(rx.posts()) == 3
    body = await (await client.get(f"/v1/jobs/{job_id}/webhooks")).json()
    conforms(await fetch_spec(client), "WebhookList", body)  # the declared response model


async def test_connection_refused_is_retried(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    with socket.socket() as s:  # a loopback port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = await idle_app(
        aiohttp_client, make_settings, webhook_backoff_s=0.05, webhook_max_attempts=2
    )
    job_id = await queued_then_cancelled(client, fox_wav, f"http://127.0.0.1:{port}/hook")
    dead = await wait_state(client, job_id, "dead")
    assert dead["attempts"] == 2 and all(a["status_code"] is None for a in dead["history"])


SSRF = [
    "169.254.169.254",
    "[::ffff:127.0.0.1]",
    "0x7f000001",
    "100.64.0.1",
    "localhost.",
    "2130706433",
    "127.0.0.1",
    "[::1]",
    "10.0.0.1",
    "[::ffff:169.254.169.254]",
    "[64:ff9b::a9fe:a9fe]",
]


@pytest.mark.parametrize("host", SSRF)
async def test_ssrf_spellings_refused_at_submit(
    aiohttp_client: Any, make_settings: Any, receiver: Any, fox_wav: Path, host: str
) -> None:
    """RELIABILITY 22: with private targets disallowed, every spelling is refused
    with 422 before anything is queued, and the loopback listener hears nothing."""
    rx = receiver([])
    settings = make_settings(model=None, allow_private_urls=False)
    client = await aiohttp_client(create_app(settings))
    callback = f"http://{host}:{rx.port}/hook"
    for path in ("/v1/jobs", "/transcribe"):
        resp = await client.post(path, data=audio_form(fox_wav, callback_url=callback))
        body = await resp.json()
        assert resp.status == 422, body
        assert body["error"]["code"] == "invalid_callback_url"
        assert body["error"]["param"] == "callback_url"
        assert "callback_url refused: " in body["error"]["message"]
    resp = await client.post("/v1/jobs", json={"url": rx.url, "callback_url": callback})
    assert resp.status == 422 and (await resp.json())["error"]["code"] == "invalid_callback_url"
    assert (await (await client.get("/v1/jobs")).json())["data"] == []
    assert list((settings.data_dir / "uploads").iterdir()) == []
    await asyncio.sleep(0.3)
    assert rx.hits == []  # neither the job's upload source nor the hook was touched


@pytest.mark.parametrize(
    "callback",
    ["http://169.254.169.254/latest/meta-data", "http://[fe80::1]/x", "ftp://127.0.0.1/x",
     "http:///nohost", "http://127.0.0.1:99999/x"],
)  # fmt: skip
async def test_metadata_and_malformed_callbacks_refused_even_when_private_allowed(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path, callback: str
) -> None:
    client = await aiohttp_client(create_app(make_settings(model=None, allow_private_urls=True)))
    resp = await client.post("/v1/jobs", data=audio_form(fox_wav, callback_url=callback))
    body = await resp.json()
    assert resp.status == 422 and body["error"]["code"] == "invalid_callback_url", body


async def test_a_job_without_callback_has_no_deliveries(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    client = await idle_app(aiohttp_client, make_settings)
    job = await submit(client, fox_wav)
    await client.delete(f"/v1/jobs/{job['id']}")
    assert await webhooks(client, job["id"]) == []
    assert (await client.get("/v1/jobs/nope/webhooks")).status == 404


def test_schedule_doubles_with_jitter_caps_and_honours_retry_after() -> None:
    policy = RetryPolicy(max_attempts=16, backoff_s=10)
    for attempt, full in ((1, 10), (2, 20), (5, 160), (10, 3600), (15, 3600)):
        for _ in range(20):
            assert full / 2 <= policy.delay(attempt) <= full
    assert policy.delay(1, retry_after=120) == 120  # longer than the backoff: honoured
    assert retry_after_s("7") == 7 and retry_after_s("soon") is None
    assert 50 < retry_after_s(formatdate(time.time() + 60, usegmt=True)) <= 60  # type: ignore[operator]


@pytest.mark.parametrize(
    "code,retryable,state",
    [(200, True, "delivered"), (204, True, "delivered"), (410, False, "disabled"),
     (404, False, "dead"), (401, False, "dead"), (500, True, "pending"), (429, True, "pending"),
     (301, True, "pending"), (None, True, "pending")],
)  # fmt: skip
def test_what_an_answer_means(code: int | None, retryable: bool, state: str) -> None:
    if code is not None and code >= 300 and code != 410:
        assert retryable_status(code) == retryable
    attempt = DeliveryAttempt(1, time.time(), code, None, 0.1)
    outcome = judge(RetryPolicy(3, 1.0), attempt, retryable=retryable)
    assert outcome.state == state
    assert (outcome.next_attempt_at is not None) == (state == "pending")
    last = DeliveryAttempt(3, time.time(), code, None, 0.1)  # the last allowed attempt
    if state == "pending":
        assert judge(RetryPolicy(3, 1.0), last, retryable=True).state == "dead"


def test_a_malformed_secret_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        signer_for("whsec_not base64!")
    assert signer_for(None) is None and signer_for(SECRET) is not None


async def test_two_nodes_on_postgresql_send_each_delivery_once(receiver: Any) -> None:
    """Two nodes' dispatchers (own pools) drain one PostgreSQL outbox at once:
    the receiver sees every delivery, each ``webhook-id`` once, and the store
    records each as delivered after one attempt."""
    hook = receiver([])
    config = DispatcherConfig(
        RetryPolicy(3, 1.0), timeout_s=10, allow_private=True, poll_interval_s=1.0
    )
    async with pg_schema_url() as url:
        nodes = [await PostgresStore.open(url, max_size=4) for _ in range(2)]
        for i in range(24):
            await nodes[0].create(new_job(id=f"n{i}", callback_url=hook.url))
            await nodes[0].cancel(f"n{i}")
        await asyncio.gather(*(Dispatcher(s, None, config).drain(60) for s in nodes))
        ids = [h.headers["webhook-id"] for h in hook.posts()]
        deliveries = [d for i in range(24) for d in await nodes[0].deliveries(f"n{i}")]
        assert sorted(ids) == sorted(d.id for d in deliveries) and len(ids) == 24
        assert {(d.state, len(d.attempts)) for d in deliveries} == {(DeliveryState.DELIVERED, 1)}
        for s in nodes:
            await s.close()
