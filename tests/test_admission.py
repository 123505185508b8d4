"""The worker's decisions, over plain values: which jobs it claims (the fair
share, interactive requests first, a cap), how many rows a step takes, whose
jobs recovery may requeue at once, whom an engine crash blames, and which
steps may run together."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from sona.admission import (
    HOST,
    Capacity,
    Held,
    StepGate,
    blamed,
    may_claim,
    may_start,
    min_priority,
    owner_is_dead,
    owner_pid,
    step_size,
)

CPU = Capacity(batch_size=2, parallel_steps=2, max_jobs=8)  # a round has 4 rows


def test_any_job_is_claimed_while_fewer_are_in_flight_than_a_round_has_rows() -> None:
    """A clip behind a long job gets a row at once, however full the pool is."""
    assert min_priority([], 0, CPU) is None
    assert min_priority([0, 0, 0], 100, CPU) is None  # 3 < 4 rows, a full pool
    assert min_priority([0, 0, 0, 0], 100, CPU) == 1  # 4 rows taken, the pool full


def test_any_job_is_claimed_while_the_pool_holds_less_than_two_batches() -> None:
    assert min_priority([0] * 5, 3, CPU) is None
    assert min_priority([0] * 5, 4, CPU) == 1


def test_past_that_only_a_job_more_urgent_than_every_one_in_flight_gets_in() -> None:
    assert min_priority([0, 5, 1_000_000, 0], 100, CPU) == 1_000_001
    # At max_jobs even a hungry pool takes only the more urgent.
    assert min_priority([3] * 8, 0, CPU) == 4


def test_nobody_is_claimed_while_stopping_or_past_twice_max_jobs() -> None:
    assert may_claim(0, CPU, stopping=False)
    assert may_claim(15, CPU, stopping=False)  # room for urgent jobs beyond max_jobs
    assert not may_claim(16, CPU, stopping=False)
    assert not may_claim(0, CPU, stopping=True)


def test_a_step_takes_a_full_batch_while_a_job_is_still_being_cut() -> None:
    """More chunks are coming: a short step now would only cost batching."""
    wide = Capacity(batch_size=4, parallel_steps=2, max_jobs=8)
    assert step_size(wide, 1, cutting=True) == 4
    assert step_size(wide, 5, cutting=True) == 4


def test_the_last_chunks_in_flight_are_shared_out_among_the_parallel_steps() -> None:
    """Nothing more is being cut: 5 chunks left are 3 for one step, then the
    other 2 one at a time as steps free up, not 4 on one replica and 1 on
    the other while it idles."""
    wide = Capacity(batch_size=4, parallel_steps=2, max_jobs=8)
    assert step_size(wide, 20, cutting=False) == 4  # enough for every step: full batches
    assert step_size(wide, 8, cutting=False) == 4
    assert step_size(wide, 5, cutting=False) == 3
    assert step_size(wide, 2, cutting=False) == 1
    assert step_size(wide, 1, cutting=False) == 1
    assert step_size(wide, 0, cutting=False) == 1  # an empty pool takes nothing anyway
    one = Capacity(batch_size=4, parallel_steps=1, max_jobs=8)
    assert step_size(one, 3, cutting=False) == 3  # one replica: nothing to share with


def test_a_worker_id_names_a_process_only_on_this_host() -> None:
    assert owner_pid(f"{HOST}:123:abcd") == 123
    assert owner_pid("elsewhere:123:abcd") is None
    assert owner_pid(f"{HOST}:abc:abcd") is None
    assert owner_pid("garbage") is None


def test_a_dead_owner_is_one_whose_process_is_gone() -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert owner_is_dead(f"{HOST}:{gone.stdout.strip()}:x")
    assert not owner_is_dead(f"{HOST}:{os.getpid()}:x")
    assert not owner_is_dead(f"{HOST}:1:x")  # init: alive (someone else's, PermissionError)
    assert not owner_is_dead(f"other-host:{gone.stdout.strip()}:x")  # cannot tell: the lease


def test_a_crash_blames_every_job_the_engine_held() -> None:
    held = [Held("a", True, False), Held("b", True, False)]
    assert blamed(held, set(), deliberate=False) == {"a", "b"}
    assert blamed(held, {"a"}, deliberate=False) == {"a", "b"}  # no suspect in a step


def test_a_suspect_caught_in_its_step_takes_the_blame_alone() -> None:
    held = [Held("a", True, False), Held("sus", True, True), Held("b", True, False)]
    assert blamed(held, {"sus"}, deliberate=False) == {"sus"}
    # The suspect was not stepping: the death was elsewhere, everyone shares it.
    assert blamed(held, {"a"}, deliberate=False) == {"a", "sus", "b"}


def test_nobody_is_blamed_for_a_kill_sona_chose_or_a_job_never_opened() -> None:
    held = [Held("a", True, False), Held("loading", False, False)]
    assert blamed(held, set(), deliberate=True) == set()
    assert blamed(held, set(), deliberate=False) == {"a"}


def test_a_suspects_step_starts_only_when_nothing_runs_and_blocks_the_rest() -> None:
    assert may_start(True, 0, solo_running=False, solo_waiting=1)
    assert not may_start(True, 1, solo_running=False, solo_waiting=1)
    assert may_start(False, 3, solo_running=False, solo_waiting=0)
    assert not may_start(False, 0, solo_running=True, solo_waiting=0)
    assert not may_start(False, 1, solo_running=False, solo_waiting=1)  # no overtaking


async def test_a_suspects_step_waits_for_the_steps_in_flight_and_runs_alone() -> None:
    """A suspect's step starts once the step in flight ends, and a step asked
    for after it waits until it is over: nothing runs beside it."""
    gate, order = StepGate(), list[str]()
    first_in, release = asyncio.Event(), asyncio.Event()

    async def step(name: str, alone: bool, hold: asyncio.Event | None = None) -> None:
        async with gate.step(alone):
            order.append(f"{name} in")
            if hold is not None:
                first_in.set()
                await hold.wait()
            await asyncio.sleep(0)
            order.append(f"{name} out")

    normal = asyncio.create_task(step("normal", False, release))
    await first_in.wait()
    suspect = asyncio.create_task(step("suspect", True))
    await asyncio.sleep(0.05)
    later = asyncio.create_task(step("later", False))  # must not overtake the suspect
    await asyncio.sleep(0.05)
    assert order == ["normal in"]
    release.set()
    await asyncio.wait_for(asyncio.gather(normal, suspect, later), 10)
    assert order == [
        "normal in",
        "normal out",
        "suspect in",
        "suspect out",
        "later in",
        "later out",
    ]


async def test_a_cancelled_suspect_wait_lets_the_others_run() -> None:
    gate = StepGate()
    held, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with gate.step(False):
            held.set()
            await release.wait()

    first = asyncio.create_task(hold())
    await held.wait()
    suspect = asyncio.create_task(gate.step(True).__aenter__())
    await asyncio.sleep(0.01)
    suspect.cancel()
    await asyncio.gather(suspect, return_exceptions=True)
    async with asyncio.timeout(5):
        async with gate.step(False):  # not held back by a suspect that left
            pass
    release.set()
    await first
