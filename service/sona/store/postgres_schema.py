"""The PostgreSQL store's schema, version by version (the same numbers as
SQLite's ``PRAGMA user_version``), and the database clock every timestamp of
that store is read from.

Adding a table or a column: append a list to ``MIGRATIONS`` (its index + 1 is
the version). ``migrate`` applies the missing versions under an advisory lock,
so nodes starting together apply each once; ``sona_schema`` records them."""

from __future__ import annotations

import asyncpg

from sona.store.search import POSTGRES_MIGRATION

# The database's clock, in epoch seconds: leases mean the same on machines
# whose clocks disagree.
NOW = "extract(epoch from clock_timestamp())::double precision"

MIGRATIONS: list[list[str]] = [
    # Version 1: jobs and their segments.
    [
        """
        CREATE TABLE jobs (
            seq BIGSERIAL UNIQUE,
            id TEXT PRIMARY KEY,
            status TEXT NOT NULL,
            priority INTEGER NOT NULL DEFAULT 0,
            model TEXT,
            options TEXT NOT NULL,
            file_path TEXT NOT NULL,
            file_name TEXT NOT NULL,
            file_sha256 TEXT NOT NULL,
            file_size BIGINT NOT NULL,
            idempotency_key TEXT UNIQUE,
            callback_url TEXT,
            metadata TEXT,
            duration DOUBLE PRECISION,
            processed_seconds DOUBLE PRECISION NOT NULL DEFAULT 0,
            segments_done INTEGER NOT NULL DEFAULT 0,
            text TEXT NOT NULL DEFAULT '',
            language TEXT,
            error_code TEXT,
            error_message TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            started_at DOUBLE PRECISION,
            finished_at DOUBLE PRECISION,
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            lease_token TEXT,
            lease_expires_at DOUBLE PRECISION,
            worker_id TEXT
        )""",
        "CREATE INDEX jobs_queue ON jobs (status, priority DESC, created_at)",
        """
        CREATE TABLE segments (
            job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            idx INTEGER NOT NULL,
            start DOUBLE PRECISION NOT NULL,
            "end" DOUBLE PRECISION NOT NULL,
            text TEXT NOT NULL,
            speaker TEXT,
            data TEXT NOT NULL,
            PRIMARY KEY (job_id, idx)
        )""",
    ],
    # Version 2: engine crashes counted apart from runs; stored chunks for resume.
    [
        "ALTER TABLE jobs ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN chunks_done INTEGER NOT NULL DEFAULT 0",
    ],
    # Version 3: the webhook outbox (E1, E2; postgres_outbox.py). A delivery row
    # is written in the same transaction as its job's terminal status; each
    # attempt is a row of its own.
    [
        """
        CREATE TABLE webhook_deliveries (
            id TEXT PRIMARY KEY,
            job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            event TEXT NOT NULL,
            url TEXT NOT NULL,
            state TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            next_attempt_at DOUBLE PRECISION,
            lease_token TEXT,
            lease_expires_at DOUBLE PRECISION
        )""",
        "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at)",
        "CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id)",
        """
        CREATE TABLE webhook_attempts (
            delivery_id TEXT NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
            number INTEGER NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            status_code INTEGER,
            error TEXT,
            duration_s DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (delivery_id, number)
        )""",
    ],
    # Version 4: warnings a finished job carries (audio_truncated), and answers
    # copied from an earlier job with the same file and options (A11 dedupe).
    [
        "ALTER TABLE jobs ADD COLUMN warnings TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE jobs ADD COLUMN cached INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX jobs_dedupe ON jobs (file_sha256, status)",
    ],
    # Version 5: the probability of a detected language (NULL when it was asked for).
    ["ALTER TABLE jobs ADD COLUMN language_probability DOUBLE PRECISION"],
    # Version 6: full-text search over segments (store/search.py).
    POSTGRES_MIGRATION,
]

# Any constant will do, as long as every Sona node uses the same one; it is
# scoped to the database, so schemas in one database migrate one at a time.
MIGRATION_LOCK = 0x5_0_4A
# Any constant will do, as long as every Sona node uses the same one; it is
# scoped to the database, so schemas in one database migrate one at a time.
MIGRATION_LOCK = 0x5_0_4A


async def migrate(db: asyncpg.Connection) -> None:
    """Within the caller's transaction: bring the schema up to the newest version."""
    await db.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
    await db.execute("CREATE TABLE IF NOT EXISTS sona_schema (version INTEGER NOT NULL)")
    version = await db.fetchval("SELECT max(version) FROM sona_schema") or 0
    for number, statements in enumerate(MIGRATIONS, start=1):
        if number <= version:
            continue
        for stmt in statements:
            await db.execute(stmt)
        await db.execute("INSERT INTO sona_schema (version) VALUES ($1)", number)
