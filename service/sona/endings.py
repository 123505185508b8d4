"""How the worker writes a job's end: the guarded terminal (or requeue) write,
shielded from a cancel of the caller; an engine crash counted against the job;
the end published to followers and logged. A write that fails (a full disk)
is logged and left: the row stays ``processing`` under a lease nobody renews,
recovery requeues it and the re-run writes the end again — a retry, never a
failed job. A live session's job that its dead daemon left to a worker ends
here too, and queues its second pass in the same write (``live_record.py``)."""

from __future__ import annotations

import asyncio
import time

import structlog

from sona.crashpoints import crash_point
from sona.errors import InvalidTransition
from sona.events import EventHub
from sona.jobs import Job, Status
from sona.live_record import second_pass, second_pass_queued
from sona.notify import Notifier
from sona.store import Claim, JobStore

log = structlog.get_logger("sona.worker")


class Endings:
    """The worker's last writes for its claims."""

    def __init__(self, store: JobStore, events: EventHub, notifier: Notifier) -> None:
        self.store = store
        self.events = events
        self.notifier = notifier  # every node's workers hear of a second pass

    async def finish(
        self, claim: Claim, status: Status, code: str | None = None, message: str | None = None
    ) -> None:
        """End ``claim``'s job in ``status`` (``QUEUED``: give it back). A live
        job that completes here (its daemon died) queues its second pass, if
        it asked for one, with the options it stored (the session's last
        changes died with it)."""
        refinement = None
        try:
            if status is Status.COMPLETED:  # the WAV was sealed when the job opened
                refinement = await second_pass(claim.job)
            # Shielded: a cancel of the caller must not leave the row half-written.
            job = await asyncio.shield(
                self.store.finish(
                    claim, status, error_code=code, error_message=message, refinement=refinement
                )
            )
        except InvalidTransition:
            log.warning("job.lease_lost", job_id=claim.job.id)
            return
        except Exception:
            # Its chunks are stored: the re-run only re-reads the file.
            log.exception("job.finish_failed", job_id=claim.job.id, status=status)
            return
        if job.status.finished:
            # The job's end and its webhook row are committed; nothing sent yet.
            crash_point("after_terminal_write", job.id)
        self._publish(job)
        if refinement is not None:
            await second_pass_queued(self.events, self.notifier, job, refinement)
        if job.refines is not None and job.status is Status.COMPLETED:
            # The same commit replaced the live job's transcript with this one's
            # (unless that job was deleted meanwhile: then no one follows it).
            self.events.publish(job.refines, "transcript_replaced", {"refined_by": job.id})
            log.info("job.transcript_replaced", job_id=job.refines, refined_by=job.id)

    async def crashed(self, claim: Claim, *, blamed: bool) -> None:
        """The engine died with this claim's job in it: requeue the job, counting
        the crash if it is to blame (past max_attempts it fails)."""
        if not blamed:
            await self.finish(claim, Status.QUEUED)
            return
        try:
            job = await self.store.engine_crashed(claim)
        except InvalidTransition:
            log.warning("job.lease_lost", job_id=claim.job.id)
            return
        except Exception:  # left to recovery, which requeues without counting
            log.exception("job.store_failed", job_id=claim.job.id)
            return
        log.warning("job.engine_crashed", job_id=job.id, status=job.status, crashes=job.crashes)
        self._publish(job)

    def _publish(self, job: Job) -> None:
        kind = job.status.value if job.status.finished else "status"
        self.events.publish(
            job.id,
            kind,
            {"status": job.status.value, "error_code": job.error_code},
        )
        seconds = time.time() - job.started_at if job.started_at else None
        log.info(
            "job.finished",
            job_id=job.id,
            status=job.status,
            error=job.error_code,
            seconds=round(seconds, 3) if seconds else None,
        )
