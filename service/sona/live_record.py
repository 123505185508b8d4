"""A live session recorded as a job, so that nothing said is lost.

The job is inserted already ``processing`` under the session's own lease
(``JobStore.start_live``: no worker claims it), its upload is a 16 kHz 16-bit
WAV the audio is appended to as it arrives, and each turn's segments are
stored as one chunk (turn ``n`` is chunk ``n``: a resumed session stores each
turn once). When the session ends the WAV's header gets its sizes and the job
is completed with what was said: it is then a job like any other (listed,
followed, downloaded in every format, kept or swept by retention).

A daemon that dies mid-session leaves the job ``processing`` with a dead
owner; on the next start ``recover_live`` (before the worker runs) completes
it with the turns it stored and the audio it had received.

**A second pass** (the session's ``refine_model``, kept in the job's metadata
from the start): the transaction that completes the job also queues an
ordinary file job over the recording with that model (``JobStore.finish``'s
``refinement``; its ``refines`` names the live job, the live job's metadata
``refined_by`` names it). Its upload is a hard link to the WAV (a copy where
links fail), so retention or deletion of either job never takes the other's
audio. When it completes, its transcript replaces the live job's in the same
transaction (``sqlstore.py``, webhook ``job.transcript_replaced``)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import socket
import struct
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import structlog

from sona import queue
from sona.events import EventHub
from sona.jobs import Job, NewJob, Segment, Status, TranscribeOptions
from sona.live_audio import RATE
from sona.notify import Notifier
from sona.store import Claim, JobStore, Lease
from sona.uploads import UploadDir

log = structlog.get_logger("sona.live")
HEADER_BYTES = 44
LIVE_KEY = "live_session"  # the job's metadata key holding its session's id
REFINE_KEY = "refine_model"  # … and the model of its second pass, if asked for


def wav_header(data_bytes: int) -> bytes:
    """A mono 16-bit PCM WAV header at 16 kHz. While recording the sizes say
    "to the end of the file" (0xFFFFFFFF), as streaming writers do."""
    size = min(data_bytes, 0xFFFFFFFF - 36)
    return (
        b"RIFF"
        + struct.pack("<I", size + 36)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, RATE, RATE * 2, 2, 16)
        + b"data"
        + struct.pack("<I", size)
    )


def _seal(path: Path) -> int:
    """Write the real sizes into the header; the audio's length in bytes."""
    data = max(0, path.stat().st_size - HEADER_BYTES)
    data -= data % 2
    with path.open("r+b") as f:
        f.write(wav_header(data))
    return data


def _append(path: Path, samples: np.ndarray) -> None:
    pcm = (np.clip(samples, -1.0, 1.0 - 1 / 32768) * 32768).astype("<i2").tobytes()
    with path.open("ab") as f:
        f.write(pcm)


def _linked(path: Path) -> tuple[Path, str, int]:
    """The sealed recording as a file of its own beside it (a hard link; a copy
    where the file system has none), its sha256 and size."""
    twin = path.with_name(uuid.uuid4().hex)  # as UploadDir.new_path names uploads
    try:
        os.link(path, twin)
    except OSError:
        shutil.copyfile(path, twin)
    with twin.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return twin, digest, twin.stat().st_size


@dataclass(frozen=True)
class Ending:
    """What completing a live job needs beside its claim: where a second pass
    is announced, and how many runs it gets."""

    store: JobStore
    events: EventHub
    notifier: Notifier
    max_attempts: int


class LiveRecording:
    """One session's job: its audio file, its stored turns, its lease."""

    def __init__(self, ending: Ending, claim: Claim, lease_s: float) -> None:
        self.store, self.events, self.claim = ending.store, ending.events, claim
        self._ending = ending
        self.path = Path(claim.job.file_path)
        self._lease_s = lease_s
        self._segments = claim.job.segments_done
        self._language: str | None = claim.job.language
        self._lock = asyncio.Lock()  # turns and the end, one at a time, in order
        self._keeper = asyncio.create_task(self._keep_lease())

    @property
    def job_id(self) -> str:
        return self.claim.job.id

    @property
    def turns(self) -> int:
        return self.claim.job.chunks_done

    @classmethod
    async def open(
        cls,
        *,
        ending: Ending,
        uploads: UploadDir,
        session_id: str,
        model_id: str,
        options: TranscribeOptions,
        lease_s: float,
        callback_url: str | None = None,
        refine_model: str | None = None,
    ) -> LiveRecording:
        """``callback_url``: the job's webhooks (its end, its transcript
        replaced); ``refine_model``: a resolved model id for the second pass."""
        path = uploads.new_path()
        await asyncio.to_thread(path.write_bytes, wav_header(0xFFFFFFFF))
        new = NewJob(
            id=f"job_{uuid.uuid4().hex}",
            options=options,
            model=model_id,
            priority=0,
            file_path=str(path),
            file_name=f"{session_id}.wav",
            file_sha256=hashlib.sha256(session_id.encode()).hexdigest(),
            file_size=0,
            duration=None,
            max_attempts=1,
            callback_url=callback_url,
            metadata={LIVE_KEY: session_id, **({REFINE_KEY: refine_model} if refine_model else {})},
        )
        claim = await ending.store.start_live(new, worker_id=owner_id(), lease_s=lease_s)
        ending.events.publish(claim.job.id, "status", {"status": "processing"})
        log.info("live.recording", session=session_id, job_id=claim.job.id, refine=refine_model)
        return cls(ending, claim, lease_s)

    async def _keep_lease(self) -> None:
        while True:
            await asyncio.sleep(self._lease_s / 3)
            with contextlib.suppress(Exception):  # a store hiccup: the next beat retries
                if await self.store.heartbeat(self.claim, self._lease_s) is Lease.LOST:
                    log.warning("live.lease_lost", job_id=self.job_id)
                    return

    async def write(self, samples: np.ndarray) -> None:
        await asyncio.to_thread(_append, self.path, samples)

    async def turn(
        self, no: int, offset_s: float, segments: list[Segment], language: str | None
    ) -> None:
        """Store turn ``no``'s segments (times from the turn's start) on the
        session's timeline; a turn stored already (a resume) is skipped."""
        async with self._lock:
            if no < self.claim.job.chunks_done:
                return
            stored = [
                self._shifted(s, offset_s, self._segments + i) for i, s in enumerate(segments)
            ]
            end = max([offset_s, *(s.end for s in stored)])
            await self.store.add_chunks(
                self.claim, first=no, count=1, segments=stored, processed_seconds=end
            )
            self.claim.job.chunks_done = no + 1
            self._segments += len(stored)
            self._language = self._language or language
            for seg in stored:
                self.events.publish(self.job_id, "segment", asdict(seg))
            self.events.publish(self.job_id, "progress", {"processed_seconds": end})

    @staticmethod
    def _shifted(seg: Segment, offset: float, index: int) -> Segment:
        words = [replace(w, start=w.start + offset, end=w.end + offset) for w in seg.words]
        return replace(
            seg,
            index=index,
            start=round(seg.start + offset, 3),
            end=round(seg.end + offset, 3),
            words=words,
        )

    async def finish(self, options: TranscribeOptions | None = None) -> Job | None:
        """Seal the WAV and complete the job with what was said; ``options``:
        the session's language and prompt as they are now, for a second pass."""
        self._keeper.cancel()
        async with self._lock:
            return await complete(self._ending, self.claim, self._language, options)


def owner_id() -> str:
    """Like a worker's id (host:pid:nonce): a dead daemon's sessions are found."""
    return f"{socket.gethostname()}:{os.getpid()}:live"


async def complete(
    ending: Ending, claim: Claim, language: str | None, options: TranscribeOptions | None = None
) -> Job | None:
    """Seal the WAV and complete the job; with a ``refine_model``, its second
    pass is queued in the same transaction, with ``options`` (else the job's,
    as the session opened: after a crash)."""
    store, events = ending.store, ending.events
    path = Path(claim.job.file_path)
    try:
        data = await asyncio.to_thread(_seal, path)
        duration = data / 2 / RATE
        await store.set_info(claim, duration=duration, language=language)
        refinement = None
        refine_model = (claim.job.metadata or {}).get(REFINE_KEY)
        if refine_model and data:  # no audio, nothing to transcribe again
            # A link whose row never commits is an orphan the start-up sweep
            # removes (deleting it here could race a commit whose answer was lost).
            linked, digest, size = await asyncio.to_thread(_linked, path)
            recorded = replace(claim.job, options=options or claim.job.options)
            refinement = second_pass(
                recorded, refine_model, linked, digest, size, duration, ending.max_attempts
            )
        job = await store.finish(claim, Status.COMPLETED, refinement=refinement)
    except Exception:  # the lease was lost, the store is gone: recovery finishes it
        log.exception("live.finish_failed", job_id=claim.job.id)
        return None
    events.publish(job.id, job.status.value, {"status": job.status.value, "error_code": None})
    log.info("live.completed", job_id=job.id, turns=job.chunks_done)
    if refinement is not None:
        events.publish(refinement.id, "status", {"status": "queued"})
        await queue.announce(ending.notifier, refinement.id)
        log.info("live.refine_queued", job_id=job.id, refined_by=refinement.id)
    return job


def second_pass(
    job: Job, model_id: str, path: Path, digest: str, size: int, duration: float, attempts: int
) -> NewJob:
    """An ordinary file job over the live job's recording (its own file),
    with the session's language and prompt, at batch priority."""
    return NewJob(
        id=f"job_{uuid.uuid4().hex}",
        options=job.options.model_copy(update={"model": model_id}),
        model=model_id,
        priority=0,
        file_path=str(path),
        file_name=job.file_name,
        file_sha256=digest,
        file_size=size,
        duration=duration,
        max_attempts=attempts,
        callback_url=job.callback_url,
        refines=job.id,
    )


async def recover_live(ending: Ending, requeued: list[str]) -> list[str]:
    """The live sessions' jobs among ``requeued`` (by ``store.recover``: their
    daemon died) are completed with what they stored, before a worker could
    take them for a file job (a second pass queued as at a session's end).
    Returns their ids."""
    store = ending.store
    done = []
    for job_id in requeued:
        job = await store.get(job_id)
        if not (job.metadata or {}).get(LIVE_KEY):
            continue
        claim = await store.claim_job(job_id, worker_id=owner_id(), lease_s=60)
        if claim is not None and await complete(ending, claim, job.language):
            done.append(job_id)
    return done
