"""Webhooks (E1, E2): what a delivery says, how it is signed, and what an
answer means for the next attempt. Pure decisions; ``dispatcher.py`` does the
sending and the store keeps the outbox.

* payload: JSON with the event type, the job id, status, error, links to the
  job and its transcript, and the text when it is at most ``TEXT_MAX_CHARS``;
* signed per Standard Webhooks with the ``standardwebhooks`` library:
  ``webhook-id`` is the delivery's id (the same on every attempt),
  ``webhook-timestamp`` is fresh per attempt, ``webhook-signature`` covers both
  and the exact body. No secret: unsigned (said once in the logs);
* the schedule: a retryable failure waits ``backoff_s · 2^(n-1)`` (capped at
  ``360 · backoff_s``), with equal jitter (a random half to all of it), and
  never less than the receiver's ``Retry-After``, itself capped at that same
  longest wait: a receiver cannot push a delivery past its last attempt.
  ``Retry-After`` is read strictly (RFC 9110: digits or an HTTP date); ``inf``,
  ``1e20``, negative or garbage values are ignored."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from standardwebhooks import Webhook

from sona.jobs import Job
from sona.store import AttemptOutcome, DeliveryAttempt, DeliveryState

TEXT_MAX_CHARS = 4096  # larger transcripts: fetch links.transcript
CAP_FACTOR = 360  # the longest wait, in units of backoff_s (10 s → 1 h)
RETRY_AFTER_MAX_S = 86_400.0  # a day; the schedule caps it further (RetryPolicy.delay)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    backoff_s: float

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        full = min(self.backoff_s * 2 ** (attempt - 1), CAP_FACTOR * self.backoff_s)
        jittered = random.uniform(full / 2, full)
        return max(jittered, min(retry_after or 0.0, CAP_FACTOR * self.backoff_s))


def payload(job: Job, event: str, delivery_id: str, public_url: str | None) -> bytes:
    """The body of every attempt of one delivery (the job has ended: it no
    longer changes, so neither does the body; except a live session's job,
    whose transcript its second pass may replace meanwhile)."""
    base = (public_url or "").rstrip("/")
    small = len(job.text) <= TEXT_MAX_CHARS
    body: dict[str, Any] = {
        "type": event,
        "id": delivery_id,
        "timestamp": _iso(job.finished_at or job.created_at),
        "data": {
            "job_id": job.id,
            "status": job.status.value,
            "error": (
                {"code": job.error_code, "message": job.error_message or job.error_code}
                if job.error_code
                else None
            ),
            "text": job.text if small else None,
            "text_truncated": not small,
            "duration": job.duration,
            "language": job.language,
            "model": job.model,
            "metadata": job.metadata,
            "links": {
                "job": f"{base}/v1/jobs/{job.id}",
                "transcript": f"{base}/v1/jobs/{job.id}/transcript",
                "webhooks": f"{base}/v1/jobs/{job.id}/webhooks",
            },
        },
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def headers(delivery_id: str, body: bytes, signer: Webhook | None) -> dict[str, str]:
    """Headers for one attempt: a fresh timestamp each time, signed when a
    secret is configured."""
    now = datetime.now(UTC)
    out = {
        "Content-Type": "application/json",
        "User-Agent": "Sona-Webhooks/1",
        "webhook-id": delivery_id,
        "webhook-timestamp": str(int(now.timestamp())),
    }
    if signer is not None:
        out["webhook-signature"] = signer.sign(delivery_id, now, body.decode())
    return out


def signer_for(secret: str | None) -> Webhook | None:
    """The signer for ``secret`` (``whsec_<base64>``); a malformed secret raises
    ValueError at start-up, not at the first delivery."""
    if not secret:
        return None
    try:
        return Webhook(secret)
    except Exception as exc:  # binascii.Error, EmptyWebhookSecretError
        raise ValueError(
            "webhook_secret must be 'whsec_' followed by base64 (e.g. 24+ random bytes)"
        ) from exc


def retry_after_s(value: str | None) -> float | None:
    """``Retry-After`` as seconds, at most ``RETRY_AFTER_MAX_S``: delta-seconds
    (ASCII digits only) or an HTTP date; anything else is None."""
    value = (value or "").strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return float(min(int(value[:12]), RETRY_AFTER_MAX_S))
    try:
        seconds = parsedate_to_datetime(value).timestamp() - time.time()
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    return min(max(0.0, seconds), RETRY_AFTER_MAX_S)


def judge(
    policy: RetryPolicy,
    attempt: DeliveryAttempt,
    *,
    retry_after: float | None = None,
    retryable: bool,
) -> AttemptOutcome:
    """What follows an attempt: delivered on 2xx; disabled on 410; dead on
    another final answer or the last attempt; otherwise pending again."""
    code = attempt.status_code
    if code is not None and 200 <= code < 300:
        return AttemptOutcome(attempt, DeliveryState.DELIVERED)
    if code == 410:
        return AttemptOutcome(attempt, DeliveryState.DISABLED)
    if not retryable or attempt.number >= policy.max_attempts:
        return AttemptOutcome(attempt, DeliveryState.DEAD)
    wait = policy.delay(attempt.number, retry_after)
    return AttemptOutcome(attempt, DeliveryState.PENDING, attempt.at + attempt.duration_s + wait)


def retryable_status(code: int) -> bool:
    """Timeouts and connection errors are retried by the caller; of answers:
    3xx (not followed, but a receiver may fix it), 408, 425, 429 and 5xx.
    Any other 4xx is final: the same request would meet it again."""
    return 300 <= code < 400 or code in (408, 425, 429) or code >= 500
