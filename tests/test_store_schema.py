"""The schema both stores derive from ``store/schema.py``, held to what came
before it and to the job it stores:

* a database made by the schema code of before issue 19.3 (frozen below,
  statement for statement), at the version it reached, opens unchanged: its
  data and version survive, the missing versions are applied, and the result
  has the very tables, columns, indexes and constraints a new database has;
* every ``jobs`` column is a ``Job`` field (or the store's own bookkeeping),
  every ``Job`` field a column (but the request-only ``dedupe``), and every
  field of the API's ``JobOut`` comes from a ``Job`` field or is a derived one
  named here."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import pytest

from sona.api.schemas import JobOut, iso, job_model
from sona.jobs import Job, Status, TranscribeOptions
from sona.store import schema
from sona.store.postgres import PostgresStore
from sona.store.rows import job_from_row
from sona.store.sql import POSTGRES, SQLITE, render
from sona.store.sqlite import SqliteStore
from tests.pg import pg_schema_url
from tests.test_store_contract import add, claim_of, new_job, seg

# -- the schema code of before (sqlite.py, sqlite_outbox.py, postgres_schema.py) --

_OLD_JOBS = """
    CREATE TABLE jobs (
        {seq}id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0,
        model TEXT,
        options TEXT NOT NULL,
        file_path TEXT NOT NULL,
        file_name TEXT NOT NULL,
        file_sha256 TEXT NOT NULL,
        file_size {bigint} NOT NULL,
        idempotency_key TEXT UNIQUE,
        callback_url TEXT,
        metadata TEXT,
        duration {real},
        processed_seconds {real} NOT NULL DEFAULT 0,
        segments_done INTEGER NOT NULL DEFAULT 0,
        text TEXT NOT NULL DEFAULT '',
        language TEXT,
        error_code TEXT,
        error_message TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        created_at {real} NOT NULL,
        started_at {real},
        finished_at {real},
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        lease_token TEXT,
        lease_expires_at {real},
        worker_id TEXT
    )"""
_OLD_SEGMENTS = """
    CREATE TABLE segments (
        job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        start {real} NOT NULL,
        "end" {real} NOT NULL,
        text TEXT NOT NULL,
        speaker TEXT,
        data TEXT NOT NULL,
        PRIMARY KEY (job_id, idx)
    )"""
_OLD_DELIVERIES = """
    CREATE TABLE webhook_deliveries (
        id TEXT PRIMARY KEY,
        job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        event TEXT NOT NULL,
        url TEXT NOT NULL,
        state TEXT NOT NULL,
        created_at {real} NOT NULL,
        next_attempt_at {real},
        lease_token TEXT,
        lease_expires_at {real}
    )"""
_OLD_ATTEMPTS = """
    CREATE TABLE webhook_attempts (
        delivery_id TEXT NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
        number INTEGER NOT NULL,
        at {real} NOT NULL,
        status_code INTEGER,
        error TEXT,
        duration_s {real} NOT NULL,
        PRIMARY KEY (delivery_id, number)
    )"""


def old_migrations(postgres: bool) -> list[list[str]]:
    """Versions 1-5 as the old code spelled them: the same text in both
    stores but for these types and PostgreSQL's ``seq``."""
    words = (
        {"seq": "seq BIGSERIAL UNIQUE,\n        ", "bigint": "BIGINT", "real": "DOUBLE PRECISION"}
        if postgres
        else {"seq": "", "bigint": "INTEGER", "real": "REAL"}
    )
    return [
        [
            _OLD_JOBS.format(**words),
            "CREATE INDEX jobs_queue ON jobs (status, priority DESC, created_at)",
            _OLD_SEGMENTS.format(**words),
        ],
        [
            "ALTER TABLE jobs ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE jobs ADD COLUMN chunks_done INTEGER NOT NULL DEFAULT 0",
        ],
        [
            _OLD_DELIVERIES.format(**words),
            "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at)",
            "CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id)",
            _OLD_ATTEMPTS.format(**words),
        ],
        [
            "ALTER TABLE jobs ADD COLUMN warnings TEXT NOT NULL DEFAULT '[]'",
            "ALTER TABLE jobs ADD COLUMN cached INTEGER NOT NULL DEFAULT 0",
            "CREATE INDEX jobs_dedupe ON jobs (file_sha256, status)",
        ],
        [f"ALTER TABLE jobs ADD COLUMN language_probability {words['real']}"],
    ]


# What the old code's database holds: a finished job with a segment and a
# delivery that has had one attempt (the outbox from version 3 on).
_JOB = """INSERT INTO jobs (id, status, priority, options, file_path, file_name,
    file_sha256, file_size, callback_url, metadata, duration, processed_seconds,
    segments_done, text, language, attempts, max_attempts, created_at, started_at,
    finished_at) VALUES ('old', 'completed', 3, '{}', '/x', 'a.wav', 'aaa', 1,
    'http://127.0.0.1:9/hook', '{"k": 1}', 2.5, 2.5, 1, 'hello', 'en', 1, 2, 10, 11, 12)"""
_SEGMENT = """INSERT INTO segments (job_id, idx, start, "end", text, speaker, data)
    VALUES ('old', 0, 0.0, 2.5, 'hello', NULL, '{}')"""
_DELIVERY = """INSERT INTO webhook_deliveries (id, job_id, event, url, state, created_at,
    next_attempt_at) VALUES ('msg_old', 'old', 'job.completed', 'http://127.0.0.1:9/hook',
    'delivered', 12, NULL)"""
_ATTEMPT = """INSERT INTO webhook_attempts (delivery_id, number, at, status_code, error,
    duration_s) VALUES ('msg_old', 1, 13, 200, NULL, 0.1)"""


def _old_rows(version: int) -> list[str]:
    return [_JOB, _SEGMENT] + ([_DELIVERY, _ATTEMPT] if version >= 3 else [])


async def _check_old_data(store: Any, version: int) -> None:
    job = await store.get("old")
    assert (job.status, job.priority, job.text, job.language) == (
        Status.COMPLETED,
        3,
        "hello",
        "en",
    )
    assert (job.metadata, job.created_at, job.finished_at) == ({"k": 1}, 10, 12)
    assert (job.crashes, job.chunks_done, job.warnings, job.cached) == (0, 0, [], False)
    assert job.language_probability is None
    [segment] = await store.segments("old")
    assert (segment.index, segment.end, segment.text) == (0, 2.5, "hello")
    deliveries = await store.deliveries("old")
    if version >= 3:
        [d] = deliveries
        assert (d.id, d.state, [a.status_code for a in d.attempts]) == (
            "msg_old",
            "delivered",
            [200],
        )
    else:
        assert deliveries == []
    # The upgraded database works: a new job runs through it.
    await store.create(new_job(id="new", callback_url="http://127.0.0.1:9/hook"))
    claim = await claim_of(store)
    await add(store, claim, 0, [seg(0)])
    done = await store.finish(claim, Status.COMPLETED)
    assert (done.status, done.text, [d.event for d in await store.deliveries("new")]) == (
        Status.COMPLETED,
        "word0",
        ["job.completed"],
    )


# -- SQLite ----------------------------------------------------------------------


async def _sqlite_shape(path: Path) -> dict[str, Any]:
    """Every table's columns, keys and indexes, as SQLite describes them."""
    shape: dict[str, Any] = {}
    async with aiosqlite.connect(path) as db:
        (version,) = await (await db.execute("PRAGMA user_version")).fetchone()  # type: ignore[misc]
        shape["version"] = version
        tables = await db.execute_fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
        )
        for (table,) in tables:
            indexes = await db.execute_fetchall(f"PRAGMA index_list({table})")
            shape[table] = {
                "columns": list(await db.execute_fetchall(f"PRAGMA table_xinfo({table})")),
                "foreign": list(await db.execute_fetchall(f"PRAGMA foreign_key_list({table})")),
                "indexes": {
                    ix[1]: (
                        ix[2:],
                        list(await db.execute_fetchall(f"PRAGMA index_xinfo({ix[1]})")),
                    )
                    for ix in indexes
                },
            }
    return shape


async def _old_sqlite(path: Path, version: int) -> None:
    async with aiosqlite.connect(path) as db:
        for number, statements in enumerate(old_migrations(False)[:version], start=1):
            for stmt in statements:
                await db.execute(stmt)
            if number >= 2:  # the old code left version 1 unrecorded: 0, then 2
                await db.execute(f"PRAGMA user_version = {number}")
        for stmt in _old_rows(version):
            await db.execute(stmt)
        await db.commit()


@pytest.mark.parametrize("version", [2, 3, 4, 5])
async def test_an_old_sqlite_database_opens_with_its_data_and_version(
    tmp_path: Path, version: int
) -> None:
    old, new = tmp_path / "old.sqlite", tmp_path / "new.sqlite"
    await _old_sqlite(old, version)
    store = await SqliteStore.open(str(old))
    try:
        await _check_old_data(store, version)
    finally:
        await store.close()
    await (await SqliteStore.open(str(new))).close()
    upgraded, fresh = await _sqlite_shape(old), await _sqlite_shape(new)
    assert upgraded["version"] == schema.LATEST == 7
    assert upgraded == fresh


# -- PostgreSQL ------------------------------------------------------------------

_PG_SHAPE = {
    "columns": """SELECT table_name, ordinal_position, column_name, data_type,
        is_nullable, column_default FROM information_schema.columns
        WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position""",
    "constraints": """SELECT conrelid::regclass::text, conname, contype,
        pg_get_constraintdef(oid) FROM pg_constraint
        WHERE connamespace = current_schema()::regnamespace ORDER BY 1, 2""",
    "indexes": """SELECT tablename, indexname, replace(indexdef, current_schema() || '.', '')
        FROM pg_indexes WHERE schemaname = current_schema() ORDER BY 1, 2""",
}


async def _pg_shape(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        shape = {k: [tuple(r) for r in await conn.fetch(q)] for k, q in _PG_SHAPE.items()}
        shape["versions"] = [r[0] for r in await conn.fetch("SELECT version FROM sona_schema")]
    finally:
        await conn.close()
    return shape


@pytest.mark.parametrize("version", [2, 3, 4, 5])
async def test_an_old_postgres_database_opens_with_its_data_and_version(version: int) -> None:
    async with pg_schema_url() as old, pg_schema_url() as new:
        conn = await asyncpg.connect(old)
        await conn.execute("CREATE TABLE sona_schema (version INTEGER NOT NULL)")
        for number, statements in enumerate(old_migrations(True)[:version], start=1):
            for stmt in statements:
                await conn.execute(stmt)
            await conn.execute("INSERT INTO sona_schema (version) VALUES ($1)", number)
        for stmt in _old_rows(version):
            await conn.execute(stmt)
        await conn.close()
        store = await PostgresStore.open(old)
        try:
            await _check_old_data(store, version)
        finally:
            await store.close()
        await (await PostgresStore.open(new)).close()
        upgraded, fresh = await _pg_shape(old), await _pg_shape(new)
        assert sorted(upgraded["versions"]) == [1, 2, 3, 4, 5, 6, 7]
        assert upgraded == fresh


# -- the migration list -------------------------------------------------------------


def test_migrations_are_numbered_one_by_one_for_both_dialects() -> None:
    assert [m.version for m in schema.MIGRATIONS] == list(range(1, schema.LATEST + 1))
    for m in schema.MIGRATIONS:
        assert m.why and m.statements(SQLITE) and m.statements(POSTGRES), m.version
    assert schema.pending(schema.LATEST) == ()
    assert [m.version for m in schema.pending(3)] == list(range(4, schema.LATEST + 1))
    # every column is added by exactly one migration that exists
    for table in schema.TABLES:
        assert {c.since for c in table.columns} <= {m.version for m in schema.MIGRATIONS}


# -- Job, the jobs table and JobOut agree -------------------------------------------

_JOB_FIELDS = {f.name for f in dataclasses.fields(Job)}

# JobOut fields that are no Job field of their name, and where they come from.
DERIVED = {
    "object": "the constant 'job'",
    "progress": "Job.progress: processed_seconds over duration (1 once completed)",
    "error": "Job.error_code and Job.error_message, the message made public",
    "queue_position": "the job's standing in the queue (standing.py), not stored",
    "eta_s": "the worker's throughput applied to the queue ahead (standing.py), not stored",
}


def test_every_jobs_column_is_a_job_field_and_every_field_a_column() -> None:
    columns = {c.name for c in schema.JOBS.columns}
    assert set(schema.STORE_ONLY) <= columns
    assert columns - set(schema.STORE_ONLY) == _JOB_FIELDS - set(schema.NOT_STORED)
    assert not set(schema.NOT_STORED) & columns


async def test_the_tables_have_the_columns_of_the_column_list(store: Any) -> None:
    """What each store really created, read back from the database."""
    if isinstance(store, SqliteStore):
        dialect = SQLITE
        async with store._db.execute("SELECT name FROM pragma_table_info('jobs')") as cur:
            names = [r[0] for r in await cur.fetchall()]
    else:
        dialect = POSTGRES
        async with store._pool.acquire() as db:
            rows = await db.fetch(
                """SELECT column_name FROM information_schema.columns WHERE table_name = 'jobs'
                   AND table_schema = current_schema() ORDER BY ordinal_position"""
            )
            names = [r[0] for r in rows]
    assert names == [c.name for c in schema.JOBS.of(dialect)]


class _Reads(dict[str, Any]):
    """A row that notes which columns were read."""

    def __init__(self, row: Any) -> None:
        super().__init__(zip(row.keys(), tuple(row), strict=True))  # an aiosqlite.Row
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)


async def test_a_job_reads_every_column_but_the_stores_own(tmp_path: Path) -> None:
    store = await SqliteStore.open(str(tmp_path / "db.sqlite"))
    try:
        await store.create(new_job(id="j"))
        async with store._db.execute("SELECT * FROM jobs WHERE id = 'j'") as cur:
            row = _Reads(await cur.fetchone())
    finally:
        await store.close()
    job_from_row(row)
    assert row.read == {c.name for c in schema.JOBS.of(SQLITE)} - set(schema.STORE_ONLY)


def test_every_jobout_field_comes_from_a_job_field_or_is_derived() -> None:
    job = Job(
        id="j",
        status=Status.FAILED,
        options=TranscribeOptions(),
        model="tiny.en",
        priority=7,
        file_path="/x",
        file_name="a.wav",
        file_sha256="aaa",
        file_size=1,
        created_at=100.0,
        attempts=2,
        crashes=1,
        metadata={"k": 1},
        duration=4.0,
        processed_seconds=2.0,
        segments_done=3,
        text="hello",
        language="en",
        language_probability=0.5,
        error_code="x",
        error_message="boom",
        started_at=101.0,
        finished_at=102.0,
        cancel_requested=True,
        warnings=["audio_truncated"],
        cached=True,
    )
    out = job_model(job)
    for name in JobOut.model_fields:
        if name in DERIVED:
            assert name not in _JOB_FIELDS, f"{name} is a Job field now: drop it from DERIVED"
            continue
        assert name in _JOB_FIELDS, f"JobOut.{name} is neither a Job field nor derived"
        value = getattr(job, name)
        expected = iso(value) if name.endswith("_at") else value
        assert getattr(out, name) == expected, name
    assert (out.progress, out.error and out.error.code) == (0.5, "x")
    assert json.loads(out.model_dump_json())["object"] == "job"


def test_a_template_renders_each_dialects_placeholders_and_words() -> None:
    template = "SELECT :a, :b{bigint}, :a FROM t WHERE at < {now} {for_update}"
    pg = render(template, POSTGRES)
    assert pg.text == (
        "SELECT $1, $2::bigint, $1 FROM t WHERE at < "
        "extract(epoch from clock_timestamp())::double precision FOR UPDATE"
    )
    assert pg.names == ("a", "b") and pg.args({"a": 1, "b": 2, "c": 3}) == (1, 2)
    lite = render(template, SQLITE)
    assert lite.text == "SELECT ?, ?, ? FROM t WHERE at < ? "
    assert lite.names == ("a", "b", "a", "now")
