"""Webhook faults from the red team (RELIABILITY 33, 35): a receiver's absurd
``Retry-After`` cannot break the API or keep a delivery alive past its last
attempt, and hanging receivers do not hold up a healthy one (deliveries are
sent independently, not in rounds)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from sona.webhooks import RetryPolicy, retry_after_s
from tests.helpers import idle_app, submit
from tests.webhook_receiver import Receiver

ABSURD = ["inf", "1e20", "-5", "garbage", "nan", "99999999999999999999"]
FAR_DATE = "Wed, 21 Oct 9999 07:28:00 GMT"


async def ended_job(client: TestClient, fox_wav: Path, callback: str) -> str:
    """A job with a callback that ends at once: queued on an idle app, cancelled."""
    job = await submit(client, fox_wav, callback_url=callback)
    assert (await client.delete(f"/v1/jobs/{job['id']}")).status == 200
    return job["id"]


async def hits(rx: Receiver, count: int, timeout: float) -> None:
    """At least ``count`` hits on ``rx``, the event loop (and the dispatcher) running."""
    deadline = time.monotonic() + timeout
    while len(rx.posts()) < count:
        assert time.monotonic() < deadline, f"only {len(rx.posts())} of {count} hits"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("value", [*ABSURD, FAR_DATE, "", "٣", "1.5", "+5"])
def test_r33_retry_after_is_read_strictly_and_capped(value: str) -> None:
    seconds = retry_after_s(value)
    assert seconds is None or 0 <= seconds <= 86_400
    policy = RetryPolicy(max_attempts=3, backoff_s=0.01)
    assert policy.delay(1, seconds) <= 360 * 0.01  # never past the schedule's longest wait
    assert retry_after_s("7") == 7
    assert 50 < retry_after_s(formatdate(time.time() + 60, usegmt=True)) <= 60  # type: ignore[operator]


async def test_r33_absurd_retry_after_never_breaks_the_api_and_the_delivery_dies(
    aiohttp_client: Any, make_settings: Any, receiver: Any, fox_wav: Path
) -> None:
    script = [f"429:{v}" for v in (*ABSURD, FAR_DATE)]
    rx = receiver(script)
    client = await idle_app(
        aiohttp_client,
        make_settings,
        webhook_backoff_s=0.005,  # the longest wait: 1.8 s
        webhook_max_attempts=len(script),
    )
    job_id = await ended_job(client, fox_wav, rx.url)
    deadline = time.monotonic() + 90
    while True:
        resp = await client.get(f"/v1/jobs/{job_id}/webhooks")
        assert resp.status == 200, await resp.text()  # at every step, never a 500
        [delivery] = (await resp.json())["data"]
        if delivery["state"] == "dead":
            break
        assert time.monotonic() < deadline, delivery
        await asyncio.sleep(0.05)
    assert delivery["attempts"] == len(script) and len(rx.posts()) == len(script)


async def test_r35_hanging_receivers_do_not_hold_up_a_healthy_one(
    aiohttp_client: Any, make_settings: Any, receiver: Any, fox_wav: Path
) -> None:
    """64 receivers that never answer (each attempt may wait 120 s) and then one
    that answers at once: it is delivered while all 64 still hang."""
    hanging = receiver(["hang"] * 64)
    healthy = receiver([])
    client = await idle_app(aiohttp_client, make_settings, webhook_timeout_s=120)
    for _ in range(64):
        await ended_job(client, fox_wav, hanging.url)
    await hits(hanging, 64, timeout=60)  # all under way at once: no rounds of 16
    job_id = await ended_job(client, fox_wav, healthy.url)
    await hits(healthy, 1, timeout=30)  # far inside one hanging attempt's 120 s
    deadline = time.monotonic() + 30
    while (await (await client.get(f"/v1/jobs/{job_id}/webhooks")).json())["data"][0][
        "state"
    ] != "delivered":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert len(hanging.posts()) == 64  # none answered, none retried yet


async def test_r33_a_row_written_before_the_cap_still_reads(
    aiohttp_client: Any, make_settings: Any, receiver: Any, fox_wav: Path
) -> None:
    """A pending delivery whose next attempt an older version set to 1e20 or
    infinity: the API shows no time for it instead of a 500."""
    rx = receiver(["500"])
    settings = make_settings(model=None, webhook_backoff_s=100)
    client = await idle_app(aiohttp_client, make_settings, webhook_backoff_s=100)
    job_id = await ended_job(client, fox_wav, rx.url)
    await hits(rx, 1, timeout=30)
    deadline = time.monotonic() + 30
    while not (await (await client.get(f"/v1/jobs/{job_id}/webhooks")).json())["data"][0][
        "attempts"
    ]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    for absurd in (1e20, float("inf")):
        with sqlite3.connect(settings.data_dir / "sona.db") as db:
            db.execute("UPDATE webhook_deliveries SET next_attempt_at = ?", (absurd,))
        resp = await client.get(f"/v1/jobs/{job_id}/webhooks")
        assert resp.status == 200, await resp.text()
        [delivery] = (await resp.json())["data"]
        assert delivery["state"] == "pending" and delivery["next_attempt_at"] is None
