"""The service layer (sona.queue) over a real SQLite store, the real intake (the
bundled tiny.en, real audio probed) and the in-process notifier, whose handlers
stand where the worker would be: ``queued`` is its wake-up, ``cancel`` its stop."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sona import queue
from sona.engine.registry import ModelRegistry
from sona.errors import Busy, InvalidTransition
from sona.events import EventHub
from sona.intake import Intake, IntakeConfig, Submission
from sona.jobs import Job, Status, TranscribeOptions
from sona.notify import Handlers, LocalNotifier
from sona.store import Claim, JobStore, open_store
from sona.uploads import StoredUpload


@dataclass
class Waker:
    woken: int = 0

    def wake(self) -> None:
        self.woken += 1


@dataclass
class Rt:
    """The parts of ``sona.runtime.Runtime`` that ``queue.Runtime`` names."""

    store: JobStore
    events: EventHub
    intake: Intake
    notifier: LocalNotifier
    webhooks: Waker = field(default_factory=Waker)
    queued: list[str] = field(default_factory=list)  # the worker's wake-ups
    stopped: list[str] = field(default_factory=list)  # the worker's cancels


@pytest.fixture
async def rt(tmp_path: Path) -> AsyncIterator[Rt]:
    store = await open_store(f"sqlite:{tmp_path / 'db.sqlite'}")
    models = ModelRegistry(None, model_dir=tmp_path / "models", allow_download=False, max_loaded=1)
    config = IntakeConfig(
        default_model="tiny.en", max_audio_seconds=3600, max_queue=10, max_attempts=3
    )
    runtime = Rt(store, EventHub(), Intake(store, models, config), LocalNotifier())

    async def stop(job_id: str) -> None:
        runtime.stopped.append(job_id)

    await runtime.notifier.start(Handlers(queued=runtime.queued.append, cancel=stop))
    yield runtime
    await runtime.notifier.close()
    await store.close()


@pytest.fixture
def upload(tmp_path: Path, fox_wav: Path) -> StoredUpload:
    """A stored copy of the fox recording, as ``UploadDir.save`` leaves one."""
    path = tmp_path / "upload.wav"
    shutil.copyfile(fox_wav, path)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    return StoredUpload(path=path, name="fox.wav", size=len(data), sha256=digest, container="wav")


async def _admitted(rt: Rt, upload: StoredUpload) -> Job:
    job, created = await queue.admit(rt, upload, Submission(options=TranscribeOptions()))
    assert created
    return job


async def _claim(rt: Rt) -> Claim:
    claim = await rt.store.claim(worker_id="w1", prefer_models=[], lease_s=60)
    assert claim is not None
    return claim


async def test_admit_queues_the_job_and_wakes_a_worker(rt: Rt, upload: StoredUpload) -> None:
    job = await _admitted(rt, upload)
    stored = await rt.store.get(job.id)
    assert stored.status == Status.QUEUED and stored.model.endswith("tiny.en")
    assert rt.queued == [job.id]


async def test_an_existing_job_answers_without_waking_anyone(
    rt: Rt, upload: StoredUpload, tmp_path: Path
) -> None:
    sub = Submission(options=TranscribeOptions(), job_id="same-job")
    again = tmp_path / "again.wav"
    shutil.copyfile(upload.path, again)
    first, created = await queue.admit(rt, upload, sub)
    second, created_again = await queue.admit(rt, StoredUpload(again, *_rest(upload)), sub)
    assert (created, created_again) == (True, False) and second.id == first.id
    assert rt.queued == [first.id]


def _rest(upload: StoredUpload) -> tuple[str, int, str, str]:
    return upload.name, upload.size, upload.sha256, upload.container


async def test_cancel_of_a_queued_job_ends_it_and_sends_its_webhook(
    rt: Rt, upload: StoredUpload
) -> None:
    job = await _admitted(rt, upload)
    cancelled = await queue.cancel(rt, job.id)
    assert cancelled.status == Status.CANCELLED
    assert rt.webhooks.woken == 1 and rt.stopped == []


async def test_cancel_of_a_processing_job_tells_its_worker(rt: Rt, upload: StoredUpload) -> None:
    job = await _admitted(rt, upload)
    await _claim(rt)
    asked = await queue.cancel(rt, job.id)
    # The worker ends it; until then it is processing, with the cancel asked for.
    assert asked.status == Status.PROCESSING and asked.cancel_requested
    assert rt.stopped == [job.id] and rt.webhooks.woken == 0


async def test_cancel_of_a_finished_job_is_refused(rt: Rt, upload: StoredUpload) -> None:
    job = await _admitted(rt, upload)
    await rt.store.finish(await _claim(rt), Status.COMPLETED)
    with pytest.raises(InvalidTransition):
        await queue.cancel(rt, job.id)
    assert rt.stopped == [] and rt.webhooks.woken == 0


async def test_abandon_cancels_only_an_unfinished_job(rt: Rt, upload: StoredUpload) -> None:
    job = await _admitted(rt, upload)
    await rt.store.finish(await _claim(rt), Status.COMPLETED)
    await queue.abandon(rt, job.id)  # finished: left alone, no InvalidTransition
    assert (await rt.store.get(job.id)).status == Status.COMPLETED


async def test_wait_returns_when_the_job_finishes(rt: Rt, upload: StoredUpload) -> None:
    job = await _admitted(rt, upload)
    claim = await _claim(rt)
    seen: list[Status] = []
    following = asyncio.Event()

    def on_update(j: Job) -> None:
        seen.append(j.status)
        following.set()  # the job as it was when the wait began

    waiting = asyncio.create_task(queue.wait(rt, job, 60, on_update=on_update))
    await asyncio.wait_for(following.wait(), 30)
    assert not waiting.done()
    await rt.store.finish(claim, Status.COMPLETED)
    done = await asyncio.wait_for(waiting, 30)
    assert done.status == Status.COMPLETED
    assert seen[0] == Status.PROCESSING and seen[-1] == Status.COMPLETED


async def test_wait_gives_the_job_as_it_is_after_the_timeout(rt: Rt, upload: StoredUpload) -> None:
    job = await _admitted(rt, upload)
    assert (await queue.wait(rt, job, 0.05)).status == Status.QUEUED


async def test_claimed_refuses_a_job_no_worker_takes_in_time(rt: Rt, upload: StoredUpload) -> None:
    job = await _admitted(rt, upload)
    updates = queue.updates(rt, job.id, poll_s=0.05)
    with pytest.raises(Busy):
        async for _ in queue.claimed(updates, 0.0, lambda: False):
            pass
    await updates.aclose()


async def test_claimed_stops_once_the_caller_is_gone(rt: Rt, upload: StoredUpload) -> None:
    job = await _admitted(rt, upload)
    await _claim(rt)
    updates = queue.updates(rt, job.id, poll_s=0.05)
    with pytest.raises(ConnectionResetError):
        async for _ in queue.claimed(updates, 60, lambda: True):
            pass
    await updates.aclose()
