"""The ``JobStore`` both stores are, written once over ``Conn``: each method
runs ``sql.py``'s statements by name in one transaction (``_tx``) or on one
reading connection (``_read``). What a database does its own way stays with
its store: connections and transactions, ``claim``, ``recover``, delivery
claims, migrating, closing (``sqlite.py``, ``postgres.py``)."""

from __future__ import annotations

import json
import uuid
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from typing import Any, Protocol

from sona.errors import IdempotencyConflict, InvalidTransition, NotFound
from sona.jobs import FINISHED, TRANSITIONS, Job, NewJob, Segment, Status
from sona.store import Claim, Lease, sql
from sona.store.outbox import OutboxMixin
from sona.store.rows import (
    job_from_row,
    new_job_values,
    segment_from_row,
    segment_values,
    text_from_rows,
)

TRANSCRIPT_REPLACED = "job.transcript_replaced"  # the webhook event of a refined live job


class Conn(Protocol):
    """A connection inside a store's transaction or read: runs ``sql.py``
    templates with their values by name. Rows read columns by name. ``many``
    binds each row as given (no clock: SQLite's ``:now`` is bound by ``one``,
    ``all`` and ``run`` only)."""

    async def one(self, template: str, **values: Any) -> Any: ...

    async def all(self, template: str, **values: Any) -> list[Any]: ...

    async def run(self, template: str, **values: Any) -> None: ...

    async def many(self, template: str, rows: list[dict[str, Any]]) -> None: ...


async def job_of(c: Conn, job_id: str) -> Job:
    row = await c.one(sql.GET_JOB, id=job_id)
    if row is None:
        raise NotFound(f"no job with id {job_id!r}", param="job_id")
    return job_from_row(row)


async def _text(c: Conn, job_id: str) -> str:
    return text_from_rows(await c.all(sql.SEGMENT_TEXTS, job_id=job_id))


async def _with_text(c: Conn, job: Job) -> Job:
    """``job`` with its text: stored once it finished, built before (a chunk's
    write never costs the whole transcript, issue 17.6)."""
    if job.text or not job.segments_done:
        return job
    return replace(job, text=await _text(c, job.id))


async def _lease(c: Conn, claim: Claim) -> Lease:
    row = await c.one(sql.LEASE, id=claim.job.id, token=claim.token)
    if row is None:
        return Lease.LOST
    return Lease.CANCEL_REQUESTED if row["cancel_requested"] else Lease.HELD


class SqlStore(OutboxMixin):
    """The shared body of ``SqliteStore`` and ``PostgresStore``."""

    def _tx(self) -> AbstractAsyncContextManager[Conn]:
        """One transaction; a full disk in it is ``StorageFull``."""
        raise NotImplementedError

    def _read(self) -> AbstractAsyncContextManager[Conn]:
        """A connection for reads outside a transaction."""
        raise NotImplementedError

    async def create(self, new: NewJob) -> tuple[Job, bool]:
        values = new_job_values(new)
        async with self._tx() as c:
            source = await c.one(sql.SAME_RESULT, **values) if new.dedupe else None
            if source is not None:
                row = await c.one(sql.COPY_RESULT, **values, source=source["id"])
                if row is not None:
                    await c.run(sql.COPY_SEGMENTS, id=new.id, source=source["id"])
                    await self._outbox(c, new.id)  # born finished: its webhook goes out
            else:
                row = await c.one(sql.INSERT_JOB, **values)
            if row is not None:
                return job_from_row(row), True
            # Nothing inserted: the id or the idempotency key names a job already
            # (two API nodes creating the same id at once both may end here).
            for col, value, query in (
                ("id", new.id, sql.GET_JOB),
                ("idempotency_key", new.idempotency_key, sql.JOB_BY_KEY),
            ):
                if value is None or (row := await c.one(query, **{col: value})) is None:
                    continue
                if row["file_sha256"] != new.file_sha256:
                    raise IdempotencyConflict(
                        f"{col} {value!r} already names a job with a different file", param=col
                    )
                return job_from_row(row), False
            raise InvalidTransition(f"job {new.id} conflicts with a job that vanished")

    async def get(self, job_id: str) -> Job:
        async with self._read() as c:
            return await _with_text(c, await job_of(c, job_id))

    async def list_jobs(
        self, *, status: Status | None, limit: int, before: str | None
    ) -> tuple[list[Job], bool]:
        query = sql.list_jobs(status=status is not None, before=before is not None)
        value = status.value if status is not None else None
        async with self._read() as c:
            rows = await c.all(query, status=value, before=before, limit=limit + 1)
            jobs = [await _with_text(c, job_from_row(r)) for r in rows[:limit]]
        return jobs, len(rows) > limit

    async def segments(self, job_id: str, *, after: int = -1) -> list[Segment]:
        async with self._read() as c:
            rows = await c.all(sql.SEGMENTS_AFTER, job_id=job_id, after=after)
        return [segment_from_row(r) for r in rows]

    async def queue_size(self) -> int:
        async with self._read() as c:
            return int((await c.one(sql.QUEUE_SIZE))[0])

    async def queue_ahead(self, job: Job) -> tuple[int, float]:
        async with self._read() as c:
            row = await c.one(
                sql.QUEUE_AHEAD, priority=job.priority, created_at=job.created_at, id=job.id
            )
        return int(row[0]), float(row[1])

    # -- live sessions (sona/live_record.py) --------------------------------

    async def start_live(self, new: NewJob, *, worker_id: str, lease_s: float) -> Claim:
        token = uuid.uuid4().hex
        values = new_job_values(new)
        async with self._tx() as c:
            row = await c.one(
                sql.START_LIVE, **values, token=token, lease_s=float(lease_s), worker_id=worker_id
            )
        return Claim(job_from_row(row), token)

    async def heartbeat(self, claim: Claim, lease_s: float) -> Lease:
        async with self._tx() as c:
            await c.run(sql.HEARTBEAT, id=claim.job.id, token=claim.token, lease_s=float(lease_s))
            return await _lease(c, claim)

    async def set_info(
        self,
        claim: Claim,
        *,
        duration: float | None,
        language: str | None,
        warnings: list[str] | None = None,
        language_probability: float | None = None,
    ) -> None:
        async with self._tx() as c:
            await c.run(
                sql.SET_INFO,
                id=claim.job.id,
                token=claim.token,
                duration=duration,
                language=language,
                language_probability=language_probability,
                warnings=json.dumps(warnings or []),
            )

    async def add_chunks(
        self,
        claim: Claim,
        *,
        first: int,
        count: int,
        segments: list[Segment],
        processed_seconds: float,
    ) -> Lease:
        job_id = claim.job.id
        async with self._tx() as c:
            lease = await _lease(c, claim)
            if lease is Lease.LOST:
                return lease
            moved = await c.one(
                sql.ADVANCE_CHUNKS,
                id=job_id,
                token=claim.token,
                count=count,
                processed_seconds=float(processed_seconds),
                first=first,
            )
            if moved is None:
                raise InvalidTransition(f"job {job_id}: chunk {first} is not the next one")
            await c.many(sql.PUT_SEGMENT, [segment_values(job_id, s) for s in segments])
            # The text is not rewritten here: that would cost the whole
            # transcript per chunk. ``finish`` stores it; reads build it till then.
            await c.run(sql.COUNT_SEGMENTS, id=job_id, added=len(segments))
            return lease

    async def finish(
        self,
        claim: Claim,
        status: Status,
        *,
        error_code: str | None = None,
        error_message: str | None = None,
        refinement: NewJob | None = None,
    ) -> Job:
        if status not in TRANSITIONS[Status.PROCESSING]:
            raise InvalidTransition(f"a processing job cannot become {status}")
        if refinement is not None and status is not Status.COMPLETED:
            raise InvalidTransition("only a completed job is refined")
        job_id = claim.job.id
        async with self._tx() as c:
            row = await c.one(
                sql.FINISH,
                id=job_id,
                token=claim.token,
                status=status.value,
                error_code=error_code,
                error_message=error_message,
            )
            if row is None:
                raise InvalidTransition(f"job {job_id} is no longer held by this worker")
            if refinement is not None:
                await self._queue_refinement(c, job_from_row(row), refinement)
            if status in FINISHED:
                row = await c.one(sql.SET_TEXT, id=job_id, text=await _text(c, job_id))
            await self._outbox(c, job_id)
            if status is Status.COMPLETED and row["refines"] is not None:
                await self._replace_transcript(c, row["refines"], source=job_id)
            return job_from_row(row)

    async def _queue_refinement(self, c: Conn, job: Job, refinement: NewJob) -> None:
        """The second pass over ``job``'s audio, queued as it completes; its id
        in ``job``'s metadata (``refined_by``)."""
        if await c.one(sql.INSERT_JOB, **new_job_values(replace(refinement, refines=job.id))):
            metadata = {**(job.metadata or {}), "refined_by": refinement.id}
            await c.run(sql.SET_METADATA, id=job.id, metadata=json.dumps(metadata))
        else:
            raise InvalidTransition(f"job {refinement.id} exists already")

    async def _replace_transcript(self, c: Conn, target: str, *, source: str) -> None:
        """``source`` (a second pass) completed: ``target``'s transcript becomes
        its, and ``target``'s webhook says so. A target deleted meanwhile (or
        not completed) is left alone."""
        if await c.one(sql.REFINED_TARGET, id=target) is None:
            return
        await c.run(sql.DELETE_SEGMENTS, id=target)
        await c.run(sql.COPY_SEGMENTS, id=target, source=source)
        await c.run(sql.REPLACE_TRANSCRIPT, id=target, source=source)
        await self._outbox(c, target, event=TRANSCRIPT_REPLACED)

    async def cancel(self, job_id: str) -> Job:
        async with self._tx() as c:
            row = await c.one(sql.GET_JOB_LOCKED, id=job_id)
            if row is None:
                raise NotFound(f"no job with id {job_id!r}", param="job_id")
            job = job_from_row(row)
            if job.status == Status.CANCELLED:
                return job
            if job.status == Status.QUEUED:
                row = await c.one(sql.CANCEL_QUEUED, id=job_id)
                if row is not None:
                    await self._outbox(c, job_id)
            elif job.status == Status.PROCESSING:
                row = await c.one(sql.REQUEST_CANCEL, id=job_id)
            else:
                raise InvalidTransition(f"job {job_id} is already {job.status}")
            if row is None:
                raise InvalidTransition(f"job {job_id} cannot be cancelled now")
            return job_from_row(row)

    async def engine_crashed(self, claim: Claim) -> Job:
        async with self._tx() as c:
            row = await c.one(sql.ENGINE_CRASHED, id=claim.job.id, token=claim.token)
            if row is None:
                raise InvalidTransition(f"job {claim.job.id} is no longer held by this worker")
            await self._outbox(c, claim.job.id)  # a row only when it failed for good
            return job_from_row(row)

    async def finished_before(self, ts: float) -> list[Job]:
        async with self._read() as c:
            rows = await c.all(sql.FINISHED_BEFORE, ts=ts)
        return [job_from_row(r) for r in rows]

    async def delete(self, job_id: str) -> None:
        async with self._tx() as c:
            await c.run(sql.DELETE_JOB, id=job_id)

    async def file_paths(self) -> set[str]:
        async with self._read() as c:
            rows = await c.all(sql.FILE_PATHS)
        return {r[0] for r in rows}
