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
opener seals the WAV first (``seal``)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import struct
import uuid
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import structlog

from sona.events import EventHub
from sona.jobs import LIVE_KEY, Job, NewJob, Segment, Status, TranscribeOptions
from sona.live_audio import RATE
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


class LiveRecording:
    """One session's job: its audio file, its stored turns, its lease."""

    def __init__(self, store: JobStore, events: EventHub, claim: Claim, lease_s: float) -> None:
        self.store, self.events, self.claim = store, events, claim
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
        uploads: UploadDir,
        session_id: str,
        model_id: str,
        options: TranscribeOptions,
        lease_s: float,
        max_attempts: int,
    ) -> LiveRecording:
        """``max_attempts``: engine crashes its re-run by a worker (its daemon
        died) may cost before it fails, as for any job."""
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
            metadata={LIVE_KEY: session_id},
        )
        claim = await store.start_live(new, worker_id=owner_id(), lease_s=lease_s)
        events.publish(claim.job.id, "status", {"status": "processing"})
        log.info("live.recording", session=session_id, job_id=claim.job.id)
        return cls(store, events, claim, lease_s)

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

    async def finish(self) -> Job | None:
        """Seal the WAV and complete the job with what was said."""
        self._keeper.cancel()
        async with self._lock:
            try:
                data = await asyncio.to_thread(seal, self.path)
                await self.store.set_info(
                    self.claim, duration=data / 2 / RATE, language=self._language
                )
                job = await self.store.finish(self.claim, Status.COMPLETED)
            except Exception:  # the lease was lost, the store is gone: recovery finishes it
                log.exception("live.finish_failed", job_id=self.job_id)
                return None
        self.events.publish(
            job.id, job.status.value, {"status": job.status.value, "error_code": None}
        )
        log.info("live.completed", job_id=job.id, turns=job.chunks_done)
        return job


def owner_id() -> str:
    """Like a worker's id (host:pid:nonce): a dead daemon's sessions are found."""
    return f"{socket.gethostname()}:{os.getpid()}:live"
