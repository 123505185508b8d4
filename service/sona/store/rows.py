"""Rows to records and back, the same for both stores: a row is anything that
reads columns by name (``aiosqlite.Row``, ``asyncpg.Record``)."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict
from typing import Any

from sona.formats import full_text
from sona.jobs import STORED, Job, NewJob, Segment, Status, TranscribeOptions, Word
from sona.store import Delivery, DeliveryAttempt, DeliveryState

Row = Any


def text_from_rows(rows: list[Row]) -> str:
    """A job's text from its ``sql.SEGMENT_TEXTS`` rows, in the transcript's order.
    A finished job's text is stored; before, it is built on read, so a chunk's
    write never costs the whole transcript (issue 17.6)."""
    return full_text(Segment(index=r[0], start=r[1], end=r[2], text=r[3]) for r in rows)


def job_from_row(row: Row) -> Job:
    return Job(
        id=row["id"],
        status=Status(row["status"]),
        options=TranscribeOptions.model_validate_json(row["options"], context=STORED),
        model=row["model"],
        priority=row["priority"],
        file_path=row["file_path"],
        file_name=row["file_name"],
        file_sha256=row["file_sha256"],
        file_size=row["file_size"],
        created_at=row["created_at"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        crashes=row["crashes"],
        chunks_done=row["chunks_done"],
        idempotency_key=row["idempotency_key"],
        callback_url=row["callback_url"],
        metadata=json.loads(row["metadata"]) if row["metadata"] else None,
        duration=row["duration"],
        processed_seconds=row["processed_seconds"],
        segments_done=row["segments_done"],
        text=row["text"],
        language=row["language"],
        language_probability=row["language_probability"],
        error_code=row["error_code"],
        error_message=row["error_message"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        cancel_requested=bool(row["cancel_requested"]),
        lease_token=row["lease_token"],
        warnings=json.loads(row["warnings"] or "[]"),
        cached=bool(row["cached"]),
        refines=row["refines"],
    )


def new_job_values(new: NewJob) -> dict[str, Any]:
    """A new job's own values, by the names ``sql.INSERT_JOB`` and
    ``sql.COPY_RESULT`` bind them."""
    return {
        "id": new.id,
        "priority": new.priority,
        "model": new.model,
        "options": new.options.model_dump_json(),
        "file_path": new.file_path,
        "file_name": new.file_name,
        "file_sha256": new.file_sha256,
        "file_size": new.file_size,
        "idempotency_key": new.idempotency_key,
        "callback_url": new.callback_url,
        "metadata": json.dumps(new.metadata) if new.metadata is not None else None,
        "duration": new.duration,
        "max_attempts": new.max_attempts,
        "refines": new.refines,
    }


def segment_values(job_id: str, seg: Segment) -> dict[str, Any]:
    """A segment's row, by the names ``sql.PUT_SEGMENT`` binds them."""
    return {
        "job_id": job_id,
        "idx": seg.index,
        "start": seg.start,
        "end": seg.end,
        "text": seg.text,
        "speaker": seg.speaker,
        "data": segment_data(seg),
    }


def new_delivery_id() -> str:
    """A webhook delivery's id: its ``webhook-id`` header on every attempt."""
    return f"msg_{uuid.uuid4().hex}"


def segment_from_row(row: Row) -> Segment:
    data = json.loads(row["data"])
    words = [Word(**w) for w in data.pop("words", [])]
    return Segment(
        index=row["idx"],
        start=row["start"],
        end=row["end"],
        text=row["text"],
        speaker=row["speaker"],
        words=words,
        **data,
    )


def segment_data(seg: Segment) -> str:
    data = asdict(seg)
    for key in ("index", "start", "end", "text", "speaker"):
        data.pop(key)
    return json.dumps(data)


def delivery_from_rows(row: Row, attempts: list[Row]) -> Delivery:
    """A ``webhook_deliveries`` row and its ``webhook_attempts`` rows, in order."""
    return Delivery(
        id=row["id"],
        job_id=row["job_id"],
        event=row["event"],
        url=row["url"],
        state=DeliveryState(row["state"]),
        created_at=row["created_at"],
        next_attempt_at=row["next_attempt_at"],
        attempts=[
            DeliveryAttempt(
                number=a["number"],
                at=a["at"],
                status_code=a["status_code"],
                error=a["error"],
                duration_s=a["duration_s"],
            )
            for a in attempts
        ],
    )
