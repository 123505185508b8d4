"""The worker's leases: every claim's lease is renewed on a timer, every
``lease_s / 3``, from the moment it is claimed (a slow model load included),
whatever the engine is doing — never by engine output, so a long step cannot
let a lease lapse. The same round notices what only a heartbeat or the clock
can tell: a cancel asked in another process, a lease another worker took over,
a job past its wall-time limit. What to do about it is the worker's."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Iterator, Mapping
from typing import Literal

from sona.flight import Flight
from sona.store import Claim, JobStore, Lease

# What a round found about one job in flight, when it is not simply held.
Verdict = Literal[Lease.LOST, Lease.CANCEL_REQUESTED, "overdue"]


class Leases:
    """Renews the leases of the claims being opened and of the jobs in flight."""

    def __init__(self, store: JobStore, lease_s: float) -> None:
        self.store = store
        self.lease_s = lease_s
        self._opening: dict[str, Claim] = {}  # claimed, their model still loading

    @contextlib.contextmanager
    def opening(self, claim: Claim) -> Iterator[None]:
        """Keep ``claim``'s lease while it is opened (its model may load for long)."""
        self._opening[claim.job.id] = claim
        try:
            yield
        finally:
            self._opening.pop(claim.job.id, None)

    async def round(
        self, flights: Mapping[str, Flight]
    ) -> AsyncGenerator[tuple[Flight, Verdict], None]:
        """Wait a third of the lease, then renew every lease: yields each job in
        flight that is overdue, lost or asked to cancel, as it is found (the
        worker acts on it before the next heartbeat goes out)."""
        await asyncio.sleep(self.lease_s / 3)
        for claim in list(self._opening.values()):
            await self.store.heartbeat(claim, self.lease_s)  # a loss shows at open
        now = time.monotonic()
        for flight in list(flights.values()):  # those in flight after the wait
            if now >= flight.deadline:
                yield flight, "overdue"
                continue
            lease = await self.store.heartbeat(flight.claim, self.lease_s)
            if lease is Lease.LOST or lease is Lease.CANCEL_REQUESTED:
                yield flight, lease
