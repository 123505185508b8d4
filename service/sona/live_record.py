"""A live session recorded as a job, so that nothing said is lost.

The job is inserted already ``processing`` under the session's own lease
(``JobStore.start_live``: no worker claims it), its upload is a 16 kHz 16-bit
WAV the audio is appended to as it arrives, and each turn's segments are
stored as one chunk (turn ``n`` is chunk ``n``: a resumed session stores each
turn once), the job's processed seconds the end of its last turn. When the
session ends the WAV's header gets its sizes and the job is completed with
what was said: it is then a job like any other (listed, followed, downloaded
in every format, kept or swept by retention).

A daemon that dies mid-session leaves the job ``processing`` with a dead
owner. Recovery (the next start, or another node once the lease lapses)
requeues it like any job, and a worker finishes it as a file job that goes on
after its stored turns (``Job.live``, ``JobSpec.from_s``): the audio received
after the last turn is cut and transcribed, numbered on from the turns; the
opener seals the WAV first (``seal``), and the job ends through the worker's
ordinary ending path (``endings.py``).

**A second pass** (the session's ``refine_model``, kept in the job's metadata
from the start, ``Job.refine_model``): whichever path completes the job —
the session's end here, or a worker finishing it after its daemon died —
queues in the same transaction an ordinary file job over the recording with
that model (``second_pass``, built here for both; ``JobStore.finish``'s
``refinement``; its ``refines`` names the live job, the live job's metadata
``refined_by`` names it). At the session's end it takes the session's
language and prompt as they are then; after a crash, the job's stored options
(those the session opened with). Its upload is a hard link to the WAV (a copy
where links fail), so retention or deletion of either job never takes the
other's audio. When it completes, its transcript replaces the live job's in
the same transaction (``sqlstore.py``, webhook ``job.transcript_replaced``)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import socket
import struct
import uuid
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import structlog

from sona import queue
from sona.events import EventHub
from sona.jobs import LIVE_KEY, REFINE_KEY, Job, NewJob, Segment, Status, TranscribeOptions
from sona.live_audio import RATE
from sona.notify import Notifier
from sona.store import Claim, JobStore, Lease
from sona.uploads import UploadDir

log = structlog.get_logger("sona.live")
HEADER_BYTES = 44


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


STREAMING = wav_header(0xFFFFFFFF)  # a recording's header until it is sealed


def seal(path: Path) -> int:
    """Write the real sizes into a recording's header, one that still says "to
    the end of the file"; any other file is left as it is (a sealed recording,
    an upload). The audio's length in bytes."""
    data = max(0, path.stat().st_size - HEADER_BYTES)
    data -= data % 2
    with path.open("r+b") as f:
        if f.read(HEADER_BYTES) == STREAMING:
            f.seek(0)
            f.write(wav_header(data))
    return data


def _append(path: Path, samples: np.ndarray) -> None:
    pcm = (np.clip(samples, -1.0, 1.0 - 1 / 32768) * 32768).astype("<i2").tobytes()
    with path.open("ab") as f:
        f.write(pcm)


def _linked(path: Path) -> tuple[Path, str, int] | None:
    """The sealed recording as a file of its own beside it (a hard link; a copy
    where the file system has none), its sha256 and size; None when it holds
    no audio (nothing to transcribe again)."""
    if path.stat().st_size <= HEADER_BYTES:
        return None
    twin = path.with_name(uuid.uuid4().hex)  # as UploadDir.new_path names uploads
    try:
        os.link(path, twin)
    except OSError:
        shutil.copyfile(path, twin)
    with twin.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return twin, digest, twin.stat().st_size


async def second_pass(job: Job, options: TranscribeOptions | None = None) -> NewJob | None:
    """The second pass of a live job about to complete (its WAV sealed): an
    ordinary file job over its own link of the recording, with the job's
    ``refine_model``, ``options``' language and prompt (else the job's stored
    ones), its callback and max_attempts, at batch priority. None when the
    job asked for none, recorded no audio, or its recording cannot be read.
    The one builder for both paths that complete a live job:
    ``LiveRecording.finish`` and the worker's ``Endings.finish``. A link
    whose row never commits is an orphan the start-up sweep removes (deleting
    it here could race a commit whose answer was lost)."""
    model_id = job.refine_model
    if model_id is None:
        return None
    try:
        linked = await asyncio.to_thread(_linked, Path(job.file_path))
    except OSError:
        # The recording went (removed by hand, a volume lost) after the job
        # opened: the job completes with its live transcript, without the pass,
        # rather than failing its end (and being retried) over and over.
        log.warning("live.refine_skipped", job_id=job.id, reason="recording unreadable")
        return None
    if linked is None:
        return None
    path, digest, size = linked
    base = options or job.options
    return NewJob(
        id=f"job_{uuid.uuid4().hex}",
        options=base.model_copy(update={"model": model_id}),
        model=model_id,
        priority=0,
        file_path=str(path),
        file_name=job.file_name,
        file_sha256=digest,
        file_size=size,
        duration=(size - HEADER_BYTES) // 2 / RATE,
        max_attempts=job.max_attempts,
        callback_url=job.callback_url,
        refines=job.id,
    )


async def second_pass_queued(
    events: EventHub, notifier: Notifier, job: Job, refinement: NewJob
) -> None:
    """``job`` completed and ``refinement`` is committed with it: say so, and
    wake a worker for it, here or on any node."""
    events.publish(refinement.id, "status", {"status": "queued"})
    log.info("live.refine_queued", job_id=job.id, refined_by=refinement.id)
    await queue.announce(notifier, refinement.id)


class LiveRecording:
    """One session's job: its audio file, its stored turns, its lease."""

    def __init__(
        self, store: JobStore, events: EventHub, notifier: Notifier, claim: Claim, lease_s: float
    ) -> None:
        self.store, self.events, self.claim = store, events, claim
        self._notifier = notifier  # every node's workers hear of its second pass
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
        store: JobStore,
        events: EventHub,
        notifier: Notifier,
        uploads: UploadDir,
        session_id: str,
        model_id: str,
        options: TranscribeOptions,
        lease_s: float,
        max_attempts: int,
        callback_url: str | None = None,
        refine_model: str | None = None,
    ) -> LiveRecording:
        """``max_attempts``: engine crashes its re-run by a worker (its daemon
        died) may cost before it fails, as for any job (its second pass gets
        as many). ``callback_url``: the job's webhooks (its end, its
        transcript replaced); ``refine_model``: a resolved model id for the
        second pass."""
        path = uploads.new_path()
        await asyncio.to_thread(path.write_bytes, STREAMING)
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
            max_attempts=max_attempts,
            callback_url=callback_url,
            metadata={LIVE_KEY: session_id, **({REFINE_KEY: refine_model} if refine_model else {})},
        )
        claim = await store.start_live(new, worker_id=owner_id(), lease_s=lease_s)
        events.publish(claim.job.id, "status", {"status": "processing"})
        log.info("live.recording", session=session_id, job_id=claim.job.id, refine=refine_model)
        return cls(store, events, notifier, claim, lease_s)

    async def _keep_lease(self) -> None:
        while True:
            await asyncio.sleep(self._lease_s / 3)
            with contextlib.suppress(Exception):  # a store hiccup: the next beat retries
                if await self.store.heartbeat(self.claim, self._lease_s) is Lease.LOST:
                    log.warning("live.lease_lost", job_id=self.job_id)
                    return

    def append(self, samples: np.ndarray) -> None:
        """Blocking (a file write): called off the event loop, in the thread
        hop that resampled the frame (``LiveSession._ingest``)."""
        _append(self.path, samples)

    async def turn(
        self,
        no: int,
        span_s: tuple[float, float],
        segments: list[Segment],
        language: str | None,
    ) -> None:
        """Store turn ``no``'s segments (times from the turn's start) on the
        session's timeline; a turn stored already (a resume) is skipped.
        ``span_s``: where the turn's audio starts and ends on that timeline;
        its end is the job's processed seconds, where a re-run after a crash
        goes on from. The language is stored once known: such a re-run keeps it."""
        async with self._lock:
            if no < self.claim.job.chunks_done:
                return
            start, end = span_s
            stored = [self._shifted(s, start, self._segments + i) for i, s in enumerate(segments)]
            end = max([end, *(s.end for s in stored)])
            await self.store.add_chunks(
                self.claim, first=no, count=1, segments=stored, processed_seconds=end
            )
            self.claim.job.chunks_done = no + 1
            self._segments += len(stored)
            for seg in stored:
                self.events.publish(self.job_id, "segment", asdict(seg))
            self.events.publish(self.job_id, "progress", {"processed_seconds": end})
            if self._language is None and language is not None:
                self._language = language  # kept for the end even if this write fails
                await self.store.set_info(self.claim, duration=None, language=language)

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
        """Seal the WAV and complete the job with what was said, queuing its
        second pass if it asked for one; ``options``: the session's language
        and prompt as they are now, for that pass."""
        self._keeper.cancel()
        async with self._lock:
            try:
                data = await asyncio.to_thread(seal, self.path)
                await self.store.set_info(
                    self.claim, duration=data / 2 / RATE, language=self._language
                )
                refinement = await second_pass(self.claim.job, options)
                job = await self.store.finish(self.claim, Status.COMPLETED, refinement=refinement)
            except Exception:  # the lease was lost, the store is gone: recovery finishes it
                log.exception("live.finish_failed", job_id=self.job_id)
                return None
        self.events.publish(
            job.id, job.status.value, {"status": job.status.value, "error_code": None}
        )
        log.info("live.completed", job_id=job.id, turns=job.chunks_done)
        if refinement is not None:
            await second_pass_queued(self.events, self._notifier, job, refinement)
        return job


def owner_id() -> str:
    """Like a worker's id (host:pid:nonce): a dead daemon's sessions are found."""
    return f"{socket.gethostname()}:{os.getpid()}:live"
