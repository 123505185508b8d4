"""The lease round: every claim renewed, those being opened included; a job
past its wall time reported without a heartbeat; a lost lease and a cancel
asked elsewhere reported, a held one not."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sona.leases import Leases
from sona.store import Claim, Lease
from tests.test_flight import claim, flight


class Heartbeats:
    """A store that answers heartbeats as told, and notes them."""

    def __init__(self, answers: dict[str, Lease]) -> None:
        self.answers = answers
        self.beats: list[str] = []

    async def heartbeat(self, c: Claim, lease_s: float) -> Lease:
        self.beats.append(c.job.id)
        return self.answers.get(c.job.id, Lease.HELD)


def job(job_id: str, *, deadline: float = float("inf")) -> Any:
    f = flight()
    f.claim = Claim(replace(f.job, id=job_id), token="t")
    f.deadline = deadline
    return f


async def test_a_round_renews_every_lease_and_reports_what_is_not_held() -> None:
    store = Heartbeats({"lost": Lease.LOST, "cancel": Lease.CANCEL_REQUESTED})
    leases = Leases(store, lease_s=0.03)  # type: ignore[arg-type]
    flights = {j: job(j) for j in ("held", "lost", "cancel")}
    flights["late"] = job("late", deadline=0.0)
    loading = replace(claim(), job=replace(claim().job, id="loading"))
    with leases.opening(loading):
        found = [(f.job.id, v) async for f, v in leases.round(flights)]
    assert found == [("lost", Lease.LOST), ("cancel", Lease.CANCEL_REQUESTED), ("late", "overdue")]
    assert store.beats == ["loading", "held", "lost", "cancel"]  # none for the overdue job
    store.beats.clear()
    _ = [x async for x in leases.round({})]
    assert store.beats == []  # opened: no longer renewed as a claim being opened
