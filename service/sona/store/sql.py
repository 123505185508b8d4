"""Every statement the two stores share, once and by name; the dialect object
that renders one for SQLite or PostgreSQL; and the clauses the statements are
built from. The tables and their numbered migrations: ``store/schema.py``.

A statement is a template: ``:name`` is a parameter, ``{word}`` a word of the
dialect or a shared clause. ``render`` turns it into the driver's text (``?``
for SQLite, ``$n`` for PostgreSQL, one number per name) and the order its
values bind in. What differs between the dialects, and only that:

* ``{now}``: the clock. SQLite binds the store's ``time.time()`` (``:now``);
  PostgreSQL reads the database's own, so leases mean the same on machines
  whose clocks disagree;
* ``{greatest}``: the two-argument maximum (``max`` / ``greatest``);
* ``{seq}``: insertion order (SQLite's ``rowid``, PostgreSQL's ``seq`` column);
* ``{bigint}``: the cast a parameter compared with a 64-bit number needs
  (PostgreSQL infers ``int4`` from an INTEGER column otherwise);
* ``{for_update}`` / ``{for_share}``: row locks. SQLite has none and needs
  none: a transaction there holds the whole database (``BEGIN IMMEDIATE``).

The statements a store alone runs (``claim``, ``recover``, the delivery
claims) stay in its module, with the connection handling."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sona.jobs import Status, sources_of
from sona.wire import FINISHED_SQL


@dataclass(frozen=True, eq=False)
class Dialect:
    """How one database spells what the other spells differently. Compared by
    identity: there are two, ``SQLITE`` and ``POSTGRES``."""

    name: str
    numbered: bool  # placeholders: "$1, $2, ..." (PostgreSQL) or "?" (SQLite)
    words: Mapping[str, str]  # the ``{word}``s of statements
    types: Mapping[str, str]  # column types of schema.py, by their neutral name


SQLITE = Dialect(
    name="sqlite",
    numbered=False,
    words={
        "now": ":now",
        "greatest": "max",
        "seq": "rowid",
        "bigint": "",
        "for_update": "",
        "for_share": "",
    },
    types={"text": "TEXT", "int": "INTEGER", "bigint": "INTEGER", "real": "REAL"},
)

POSTGRES = Dialect(
    name="postgres",
    numbered=True,
    words={
        # In epoch seconds, read at each use (clock_timestamp, not the
        # transaction's start): a lease is measured from when it is written.
        "now": "extract(epoch from clock_timestamp())::double precision",
        "greatest": "greatest",
        "seq": "seq",
        "bigint": "::bigint",
        "for_update": "FOR UPDATE",
        "for_share": "FOR SHARE",
    },
    types={
        "text": "TEXT",
        "int": "INTEGER",
        "bigint": "BIGINT",
        "real": "DOUBLE PRECISION",
        "serial": "BIGSERIAL",
        "tsvector": "tsvector",
    },
)


def _guard(target: Status) -> str:
    """``status IN (...)``: the statuses ``target`` may be reached from
    (``jobs.TRANSITIONS``)."""
    return "status IN (" + ", ".join(f"'{s.value}'" for s in sources_of(target)) + ")"


# Clauses several statements share, by the ``{word}`` they are written as.
CLAUSES = {
    # Every write a worker makes: still its job, under the token it claimed with.
    "fence": "id = :id AND lease_token = :token AND status = 'processing'",
    "finished": FINISHED_SQL,
    "to_cancelled": _guard(Status.CANCELLED),
    "to_queued": _guard(Status.QUEUED),
}


@dataclass(frozen=True)
class Query:
    """A rendered statement: its text for the driver, and which value binds
    to each placeholder."""

    text: str
    names: tuple[str, ...]

    def args(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(values[n] for n in self.names)


# ``:name``, but not the second colon of a PostgreSQL cast (``$1::bigint``).
_PARAM = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")


@lru_cache(maxsize=256)
def render(template: str, dialect: Dialect) -> Query:
    """``template`` in ``dialect``'s words and placeholders (cached: a store
    renders each statement once)."""
    text = template.format_map({**dialect.words, **CLAUSES})
    names: list[str] = []

    def placeholder(match: re.Match[str]) -> str:
        name = match.group(1)
        if not dialect.numbered:
            names.append(name)
            return "?"
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return Query(_PARAM.sub(placeholder, text), tuple(names))


# -- jobs ----------------------------------------------------------------------

GET_JOB = "SELECT * FROM jobs WHERE id = :id"
GET_JOB_LOCKED = "SELECT * FROM jobs WHERE id = :id {for_update}"
JOB_BY_KEY = "SELECT * FROM jobs WHERE idempotency_key = :idempotency_key"

# A queued job; no row when its id or idempotency key is taken (two API nodes
# creating the same id at once: one inserts, the other reads the winner's).
INSERT_JOB = """INSERT INTO jobs (id, status, priority, model, options, file_path,
    file_name, file_sha256, file_size, idempotency_key, callback_url, metadata, duration,
    max_attempts, refines, created_at)
    VALUES (:id, 'queued', :priority, :model, :options, :file_path, :file_name,
    :file_sha256, :file_size, :idempotency_key, :callback_url, :metadata, :duration,
    :max_attempts, :refines, {now})
    ON CONFLICT DO NOTHING RETURNING *"""

# A live session's job (live_record.py): inserted already processing under the
# session's own lease, so no worker claims it while the session records into it.
START_LIVE = """INSERT INTO jobs (id, status, priority, model, options, file_path,
    file_name, file_sha256, file_size, idempotency_key, callback_url, metadata, duration,
    max_attempts, created_at, attempts, lease_token, lease_expires_at, worker_id,
    started_at)
    SELECT :id, 'processing', :priority, :model, :options, :file_path, :file_name,
    :file_sha256, :file_size, :idempotency_key, :callback_url, :metadata, :duration,
    :max_attempts, clock.now, 1, :token, clock.now + :lease_s, :worker_id, clock.now
    FROM (SELECT {now} AS now) AS clock RETURNING *"""

# The newest completed job with the same file and options (A11). FOR SHARE:
# retention cannot delete it before the copy is made.
SAME_RESULT = """SELECT id FROM jobs WHERE file_sha256 = :file_sha256
    AND status = 'completed' AND options = :options
    ORDER BY finished_at DESC LIMIT 1 {for_share}"""

# A new job completed at once with ``:source``'s transcript: its own id, key,
# metadata and upload (retention of one never takes the other's), ``cached``
# set. One clock reading for its three times.
COPY_RESULT = """INSERT INTO jobs (id, status, priority, model, options, file_path,
    file_name, file_sha256, file_size, idempotency_key, callback_url, metadata,
    duration, processed_seconds, segments_done, chunks_done, text, language,
    language_probability, warnings, max_attempts, created_at, started_at,
    finished_at, cached)
    SELECT :id, 'completed', :priority, model, options, :file_path, :file_name,
    file_sha256, file_size, :idempotency_key, :callback_url, :metadata, duration,
    processed_seconds, segments_done, chunks_done, text, language,
    language_probability, warnings, :max_attempts, clock.now, clock.now, clock.now, 1
    FROM jobs CROSS JOIN (SELECT {now} AS now) AS clock WHERE id = :source
    ON CONFLICT DO NOTHING RETURNING *"""

COPY_SEGMENTS = """INSERT INTO segments (job_id, idx, start, "end", text, speaker, data)
    SELECT :id, idx, start, "end", text, speaker, data FROM segments
    WHERE job_id = :source"""


def list_jobs(*, status: bool, before: bool) -> str:
    """Newest first, maybe of one ``:status``, maybe older than job ``:before``."""
    where = ["1 = 1"]
    if status:
        where.append("status = :status")
    if before:
        where.append("{seq} < (SELECT {seq} FROM jobs WHERE id = :before)")
    return "SELECT * FROM jobs WHERE " + " AND ".join(where) + " ORDER BY {seq} DESC LIMIT :limit"


# Stream order: as stored. The transcript's order is formats.in_order's.
# Named columns: PostgreSQL's segments also hold the search index's tsv.
SEGMENTS_AFTER = """SELECT job_id, idx, start, "end", text, speaker, data FROM segments
    WHERE job_id = :job_id AND idx > :after ORDER BY idx"""
# What a job's text needs of its segments (rows.text_from_rows): no words.
SEGMENT_TEXTS = 'SELECT idx, start, "end", text FROM segments WHERE job_id = :job_id'

QUEUE_SIZE = "SELECT count(*) FROM jobs WHERE status = 'queued'"

# Queued jobs a claim takes before this one: higher priority, or as urgent and
# older (the loaded-model preference is left out: an estimate).
QUEUE_AHEAD = """SELECT count(*), coalesce(sum(duration), 0) FROM jobs
    WHERE status = 'queued' AND (priority > :priority{bigint}
    OR (priority = :priority{bigint}
        AND (created_at < :created_at OR (created_at = :created_at AND id < :id))))"""

# FOR UPDATE: the row stays as read until the caller's transaction ends.
LEASE = "SELECT cancel_requested FROM jobs WHERE {fence} {for_update}"
HEARTBEAT = "UPDATE jobs SET lease_expires_at = {now} + :lease_s WHERE {fence}"
SET_INFO = """UPDATE jobs SET duration = :duration, language = :language,
    language_probability = :language_probability, warnings = :warnings WHERE {fence}"""

# The next chunks, only if ``:first`` is next: a job's chunks are stored in
# order, each once.
ADVANCE_CHUNKS = """UPDATE jobs SET chunks_done = chunks_done + :count,
    processed_seconds = {greatest}(processed_seconds, :processed_seconds)
    WHERE {fence} AND chunks_done = :first RETURNING id"""
PUT_SEGMENT = """INSERT INTO segments (job_id, idx, start, "end", text, speaker, data)
    VALUES (:job_id, :idx, :start, :end, :text, :speaker, :data)
    ON CONFLICT (job_id, idx) DO UPDATE SET start = excluded.start,
    "end" = excluded."end", text = excluded.text, speaker = excluded.speaker,
    data = excluded.data"""
COUNT_SEGMENTS = "UPDATE jobs SET segments_done = segments_done + :added WHERE id = :id"

# Processing → ``:status``. A drain requeue (→ queued) is no failed attempt and
# no start; a completed job has processed all of its audio.
FINISH = """UPDATE jobs SET status = :status, error_code = :error_code,
    error_message = :error_message,
    finished_at = CASE WHEN :status IN {finished} THEN {now} END,
    lease_token = NULL, lease_expires_at = NULL, cancel_requested = 0,
    attempts = attempts - CASE WHEN :status = 'queued' THEN 1 ELSE 0 END,
    started_at = CASE WHEN :status = 'queued' THEN NULL ELSE started_at END,
    processed_seconds = CASE WHEN :status = 'completed'
        THEN coalesce(duration, processed_seconds) ELSE processed_seconds END
    WHERE {fence} RETURNING *"""
# A finished job's text, stored once (reads build it from the segments before).
SET_TEXT = "UPDATE jobs SET text = :text WHERE id = :id RETURNING *"
SET_METADATA = "UPDATE jobs SET metadata = :metadata WHERE id = :id"

# A live session's second pass completed (JobStore.finish): the live job's
# transcript becomes the pass's — its segments, text, language and model —
# in the transaction that completes the pass. Only a completed live job.
REFINED_TARGET = "SELECT * FROM jobs WHERE id = :id AND status = 'completed' {for_update}"
DELETE_SEGMENTS = "DELETE FROM segments WHERE job_id = :id"
REPLACE_TRANSCRIPT = """UPDATE jobs SET (text, model, language, language_probability,
    segments_done) = (SELECT s.text, s.model, s.language, s.language_probability,
    s.segments_done FROM jobs AS s WHERE s.id = :source)
    WHERE id = :id"""

# The engine died with the job in flight: one crash more; requeued, or failed
# for good once crashes reach max_attempts.
ENGINE_CRASHED = """UPDATE jobs SET crashes = crashes + 1, lease_token = NULL,
    lease_expires_at = NULL, cancel_requested = 0,
    status = CASE WHEN crashes + 1 >= max_attempts THEN 'failed' ELSE 'queued' END,
    error_code = CASE WHEN crashes + 1 >= max_attempts THEN 'worker_crashed' END,
    error_message = CASE WHEN crashes + 1 >= max_attempts
        THEN 'the engine process died while running this job '
             || (crashes + 1) || ' times; the file may crash the decoder' END,
    finished_at = CASE WHEN crashes + 1 >= max_attempts THEN {now} END,
    started_at = CASE WHEN crashes + 1 >= max_attempts THEN started_at END
    WHERE {fence} RETURNING *"""

CANCEL_QUEUED = """UPDATE jobs SET status = 'cancelled', finished_at = {now}
    WHERE id = :id AND {to_cancelled} RETURNING *"""
REQUEST_CANCEL = """UPDATE jobs SET cancel_requested = 1
    WHERE id = :id AND status = 'processing' RETURNING *"""

# Back to the queue, its lease dropped (recover): the run resumes after what
# it stored.
REQUEUE = """UPDATE jobs SET status = 'queued', lease_token = NULL,
    lease_expires_at = NULL, cancel_requested = 0, started_at = NULL"""

FINISHED_BEFORE = "SELECT * FROM jobs WHERE status IN {finished} AND finished_at < :ts"
DELETE_JOB = "DELETE FROM jobs WHERE id = :id"
FILE_PATHS = "SELECT file_path FROM jobs"

# -- the webhook outbox ----------------------------------------------------------

# The delivery of a job that has just ended, due at once (no row for a job
# without a callback_url, or not finished). One clock reading for both times.
# ``:event`` NULL: ``job.<status>``; else that event (``job.transcript_replaced``).
OUTBOX = """INSERT INTO webhook_deliveries (id, job_id, event, url, state, created_at,
    next_attempt_at)
    SELECT :delivery_id, id, coalesce(CAST(:event AS TEXT), 'job.' || status), callback_url,
    'pending', clock.now, clock.now
    FROM jobs CROSS JOIN (SELECT {now} AS now) AS clock
    WHERE id = :job_id AND callback_url IS NOT NULL AND status IN {finished}"""

GET_DELIVERY = "SELECT * FROM webhook_deliveries WHERE id = :id"
DELIVERIES_OF = "SELECT * FROM webhook_deliveries WHERE job_id = :job_id ORDER BY created_at, id"
ATTEMPTS_OF = "SELECT * FROM webhook_attempts WHERE delivery_id = :id ORDER BY number"

# An attempt's outcome, fenced by the dispatcher's lease token.
RECORD_ATTEMPT = """UPDATE webhook_deliveries SET state = :state,
    next_attempt_at = :next_attempt_at, lease_token = NULL, lease_expires_at = NULL
    WHERE id = :id AND lease_token = :token AND state = 'pending' RETURNING *"""
ADD_ATTEMPT = """INSERT INTO webhook_attempts (delivery_id, number, at, status_code,
    error, duration_s) VALUES (:id, :number, :at, :status_code, :error, :duration_s)"""
# 410 Gone: the receiver wants no more of this job's events at this URL.
DISABLE_URL = """UPDATE webhook_deliveries SET state = 'disabled', next_attempt_at = NULL
    WHERE job_id = :job_id AND url = :url AND state = 'pending'"""

# A leased delivery (an attempt under way) is claimable again at the earliest
# when its lease ends: not a reason to wake before.
NEXT_DELIVERY_AT = """SELECT min({greatest}(next_attempt_at, coalesce(lease_expires_at, 0)))
    FROM webhook_deliveries WHERE state = 'pending'"""
