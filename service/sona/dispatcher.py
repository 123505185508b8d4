"""The webhook dispatcher: sends the due deliveries of the outbox (E1, E2).

Started by the runtime beside the worker. It claims due deliveries with a
lease (``JobStore.claim_deliveries``: one sender per delivery across every
process sharing the store) and sends each in a task of its own, at most
``MAX_IN_FLIGHT`` at once: a receiver that hangs holds one slot for one
``timeout_s``, never the others' turn (there are no rounds that wait for their
slowest member). Each attempt is recorded with what follows
(``webhooks.judge``). With nothing due it sleeps until the next delivery is
due, a poll interval at most, or until ``wake()`` (a job ended, a slot freed).

Sending: POST with aiohttp through ``netguard.GuardedConnector`` (the address
checked is the address dialled, names and IP literals alike; Host and SNI stay
the URL's), redirects never
followed, one ``timeout_s`` for the whole attempt. Nothing is kept in memory
that the store does not have: a restart resumes where the rows say."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import structlog
from standardwebhooks import Webhook

from sona.errors import AddressRefused, InvalidTransition, NotFound
from sona.netguard import GuardedConnector, check_url
from sona.store import DeliveryAttempt, DeliveryClaim, DeliveryState, JobStore
from sona.webhooks import RetryPolicy, headers, judge, payload, retry_after_s, retryable_status

log = structlog.get_logger("sona.webhooks")
MAX_IN_FLIGHT = 256  # attempts under way at once in one process (one connection each)
BACKOFF_MAX_S = 30.0


_OUTCOME = {
    DeliveryState.DELIVERED: "delivered",
    DeliveryState.PENDING: "retrying",
    DeliveryState.DISABLED: "disabled",
}


@dataclass(frozen=True)
class DispatcherConfig:
    policy: RetryPolicy
    timeout_s: float
    allow_private: bool
    poll_interval_s: float
    public_url: str | None = None


class Dispatcher:
    def __init__(
        self,
        store: JobStore,
        signer: Webhook | None,
        config: DispatcherConfig,
        record: Callable[[str], None] = lambda outcome: None,
    ) -> None:
        self.store = store
        self.record = record  # counts each attempt's outcome (metrics)
        self.signer = signer
        self.config = config
        self._wake = asyncio.Event()
        # One task per attempt under way, with the session it sends on.
        self._tasks: dict[asyncio.Task[None], aiohttp.ClientSession] = {}
        self._quiet = asyncio.Event()  # no attempt in flight in this process
        self._quiet.set()
        self._warned_unsigned = False
        # The lease outlives one attempt by a margin, so no second sender starts
        # while the first may still be waiting on the receiver.
        self._lease_s = 2 * config.timeout_s + 5

    def wake(self) -> None:
        """A delivery may be due now (a job just ended here)."""
        self._wake.set()

    async def run(self) -> None:
        """Send due deliveries forever; an error (a locked database) is logged
        and retried with backoff, never the end of the dispatcher."""
        delay = self.config.poll_interval_s
        async with aiohttp.ClientSession(connector=self._connector()) as session:
            try:
                while True:
                    try:
                        if not await self.send_due(session):
                            await self._sleep()
                        delay = self.config.poll_interval_s
                    except Exception:
                        log.exception("webhook.loop_failed", retry_s=round(delay, 2))
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, BACKOFF_MAX_S)
            finally:
                await self._settle()

    async def drain(self, timeout_s: float) -> None:
        """On SIGTERM: send what is due now, within ``timeout_s``; what is due
        later waits in the store for the next start."""
        if timeout_s <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                async with aiohttp.ClientSession(connector=self._connector()) as s:
                    try:
                        while await self.send_due(s) or self._full():
                            await self._slot_freed()
                        await self._quiet.wait()  # the run loop's attempts land too
                    finally:
                        await self._settle(session=s)

    def _connector(self) -> GuardedConnector:
        return GuardedConnector(
            allow_private=self.config.allow_private,
            use_dns_cache=False,  # every attempt resolves, and checks, afresh
            force_close=True,
        )

    def _full(self) -> bool:
        return len(self._tasks) >= MAX_IN_FLIGHT

    async def _slot_freed(self) -> None:
        """Until an attempt ends (a poll interval at most), when every slot is taken."""
        self._wake.clear()
        if self._full():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.poll_interval_s)

    async def _sleep(self) -> None:
        if self._full():
            await self._slot_freed()
            return
        self._wake.clear()
        wait = self.config.poll_interval_s
        due = await self.store.next_delivery_at()
        if due is not None:
            wait = min(wait, max(0.0, due - time.time()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), wait)

    async def send_due(self, session: aiohttp.ClientSession) -> int:
        """Claim what is due, as many as there are free slots, and start each
        attempt in its own task; the number started."""
        free = MAX_IN_FLIGHT - len(self._tasks)
        if free <= 0:
            return 0
        claims = await self.store.claim_deliveries(limit=free, lease_s=self._lease_s)
        for claim in claims:
            task = asyncio.create_task(self._attempt(session, claim), name="sona-webhook")
            self._tasks[task] = session
            self._quiet.clear()
            task.add_done_callback(self._done)
        return len(claims)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if not self._tasks:
            self._quiet.set()
        if len(self._tasks) == MAX_IN_FLIGHT - 1:
            self._wake.set()  # the first free slot: the loop may claim again

    async def _attempt(self, session: aiohttp.ClientSession, claim: DeliveryClaim) -> None:
        try:
            await self._deliver(session, claim)
        except Exception as exc:  # its lease lapses; it is sent again then
            log.error("webhook.attempt_failed", delivery_id=claim.delivery.id, exc_info=exc)

    async def _settle(self, session: aiohttp.ClientSession | None = None) -> None:
        """Cancel the attempts still under way (those on ``session``, or all)
        and wait for them: their leases lapse and they are sent again later."""
        tasks = [t for t, on in self._tasks.items() if session in (None, on)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _deliver(self, session: aiohttp.ClientSession, claim: DeliveryClaim) -> None:
        d = claim.delivery
        try:
            job = await self.store.get(d.job_id)
        except NotFound:
            return  # deleted by retention meanwhile: its delivery went with it
        body = payload(job, d.event, d.id, self.config.public_url)
        if self.signer is None and not self._warned_unsigned:
            self._warned_unsigned = True
            log.warning("webhook.unsigned", hint="set SONA_WEBHOOK_SECRET to sign deliveries")
        number = len(d.attempts) + 1
        started = time.time()
        code, error, retry_after, retryable = await self._post(session, d.url, d.id, body)
        attempt = DeliveryAttempt(number, started, code, error, round(time.time() - started, 3))
        outcome = judge(self.config.policy, attempt, retry_after=retry_after, retryable=retryable)
        try:
            # Shielded: a shutdown must not lose what the receiver already saw.
            await asyncio.shield(self.store.record_attempt(claim, outcome))
        except InvalidTransition:
            log.warning("webhook.lease_lost", delivery_id=d.id, job_id=d.job_id)
            return
        self._log(claim, attempt, outcome.state, outcome.next_attempt_at)

    async def _post(
        self, session: aiohttp.ClientSession, url: str, delivery_id: str, body: bytes
    ) -> tuple[int | None, str | None, float | None, bool]:
        """(status code, error, Retry-After seconds, retryable) of one POST."""
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
        try:
            check_url(url, allow_private=self.config.allow_private)  # refused before connecting
            async with session.post(
                url,
                data=body,
                headers=headers(delivery_id, body, self.signer),
                allow_redirects=False,
                timeout=timeout,
            ) as resp:
                code = resp.status
                if 200 <= code < 300:
                    return code, None, None, True
                error = f"HTTP {code} {resp.reason or ''}".strip()
                if 300 <= code < 400:
                    error += f" (redirect to {resp.headers.get('Location', '?')} not followed)"
                return (
                    code,
                    error,
                    retry_after_s(resp.headers.get("Retry-After")),
                    (retryable_status(code)),
                )
        except AddressRefused as exc:
            return None, f"refused: {exc.message}", None, False
        except TimeoutError:
            return None, f"timed out after {self.config.timeout_s:g} s", None, True
        except aiohttp.InvalidURL as exc:
            return None, f"invalid URL: {exc}", None, False
        except aiohttp.ClientError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500], None, True

    def _log(
        self,
        claim: DeliveryClaim,
        attempt: DeliveryAttempt,
        state: DeliveryState,
        next_at: float | None,
    ) -> None:
        d = claim.delivery
        fields = {
            "delivery_id": d.id,
            "job_id": d.job_id,
            "event_type": d.event,
            "attempt": attempt.number,
            "status_code": attempt.status_code,
            "error": attempt.error,
        }
        self.record(_OUTCOME.get(state, "failed"))
        if state is DeliveryState.DELIVERED:
            log.info("webhook.delivered", **fields)
        elif state is DeliveryState.PENDING:
            retry_s = round(next_at - time.time(), 3) if next_at else None
            log.info("webhook.retry_scheduled", retry_in_s=retry_s, **fields)
        elif state is DeliveryState.DISABLED:
            log.warning("webhook.disabled", **fields)
        else:
            log.warning("webhook.failed", **fields)
