"""The tables of both stores as one column list, and their numbered migrations.

A database's version is the number of the last migration applied to it:
SQLite keeps it in ``PRAGMA user_version``, PostgreSQL in the ``sona_schema``
table; the numbers mean the same in both. Each store applies, in one
transaction, the migrations above its version, in order.

Adding to the schema: append one ``Migration`` with the next number. A column
gets ``since=`` that number in its table below and an ``AddColumns`` step; what
one database spells its own way (a full-text index, triggers) goes in that
migration's ``sqlite=`` / ``postgres=`` statements, side by side; they run as
written, after the shared steps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sona.store.sql import Dialect


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # a neutral name: text, int, bigint, real, serial (Dialect.types)
    rest: str = ""  # constraints and default, the same in both
    since: int = 1  # the migration that adds it
    only: str | None = None  # the one dialect it exists in


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    keys: str = ""  # table constraints, after the columns

    def of(self, dialect: Dialect) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.only in (None, dialect.name))

    def column_sql(self, column: Column, dialect: Dialect) -> str:
        name = f'"{column.name}"' if column.name == "end" else column.name
        return " ".join(p for p in (name, dialect.types[column.type], column.rest) if p)


# Columns that are no Job field: the store's own bookkeeping (test_store_schema
# checks that every other column is one, and every Job field a column but these
# NOT_STORED).
STORE_ONLY = {
    "seq": "PostgreSQL's insertion order, for listing newest first (SQLite: rowid)",
    "lease_expires_at": "when a worker's claim lapses; read by recover",
    "worker_id": "who holds the lease; SQLite's recover asks if it still lives",
}
# Job fields that are no column: what a request asks for, not what a job is.
NOT_STORED = {
    "dedupe": "create answers from an earlier job with the same file and options (A11)",
}

JOBS = Table(
    "jobs",
    (
        Column("seq", "serial", "UNIQUE", only="postgres"),
        Column("id", "text", "PRIMARY KEY"),
        Column("status", "text", "NOT NULL"),
        Column("priority", "int", "NOT NULL DEFAULT 0"),
        Column("model", "text"),
        Column("options", "text", "NOT NULL"),
        Column("file_path", "text", "NOT NULL"),
        Column("file_name", "text", "NOT NULL"),
        Column("file_sha256", "text", "NOT NULL"),
        Column("file_size", "bigint", "NOT NULL"),
        Column("idempotency_key", "text", "UNIQUE"),
        Column("callback_url", "text"),
        Column("metadata", "text"),
        Column("duration", "real"),
        Column("processed_seconds", "real", "NOT NULL DEFAULT 0"),
        Column("segments_done", "int", "NOT NULL DEFAULT 0"),
        Column("text", "text", "NOT NULL DEFAULT ''"),
        Column("language", "text"),
        Column("error_code", "text"),
        Column("error_message", "text"),
        Column("attempts", "int", "NOT NULL DEFAULT 0"),
        Column("max_attempts", "int", "NOT NULL"),
        Column("created_at", "real", "NOT NULL"),
        Column("started_at", "real"),
        Column("finished_at", "real"),
        Column("cancel_requested", "int", "NOT NULL DEFAULT 0"),
        Column("lease_token", "text"),
        Column("lease_expires_at", "real"),
        Column("worker_id", "text"),
        # Engine crashes counted apart from runs; stored chunks, for resume.
        Column("crashes", "int", "NOT NULL DEFAULT 0", since=2),
        Column("chunks_done", "int", "NOT NULL DEFAULT 0", since=2),
        # Warnings a finished job carries (audio_truncated); answers copied
        # from an earlier job with the same file and options (A11 dedupe).
        Column("warnings", "text", "NOT NULL DEFAULT '[]'", since=4),
        Column("cached", "int", "NOT NULL DEFAULT 0", since=4),
        # The probability of a detected language (NULL when it was asked for).
        Column("language_probability", "real", since=5),
        # A live session's second pass: the job whose transcript this one's
        # replaces when it completes (a column, not metadata: a request cannot set it).
        Column("refines", "text", since=7),
    ),
)

SEGMENTS = Table(
    "segments",
    (
        Column("job_id", "text", "NOT NULL REFERENCES jobs(id) ON DELETE CASCADE"),
        Column("idx", "int", "NOT NULL"),
        Column("start", "real", "NOT NULL"),
        Column("end", "real", "NOT NULL"),
        Column("text", "text", "NOT NULL"),
        Column("speaker", "text"),
        Column("data", "text", "NOT NULL"),  # the rest of a Segment, as JSON
        # Full-text search (store/search.py): the words, as PostgreSQL indexes
        # them; SQLite's index is an FTS5 table beside this one (migration 6).
        Column(
            "tsv",
            "tsvector",
            "GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, "
            "regexp_replace(text, '[^[:alnum:]]+', ' ', 'g'))) STORED",
            since=6,
            only="postgres",
        ),
    ),
    keys="PRIMARY KEY (job_id, idx)",
)

# The webhook outbox (E1, E2): a delivery row is written in the same
# transaction as its job's terminal status; each attempt is a row of its own.
DELIVERIES = Table(
    "webhook_deliveries",
    (
        Column("id", "text", "PRIMARY KEY"),
        Column("job_id", "text", "NOT NULL REFERENCES jobs(id) ON DELETE CASCADE"),
        Column("event", "text", "NOT NULL"),
        Column("url", "text", "NOT NULL"),
        Column("state", "text", "NOT NULL"),
        Column("created_at", "real", "NOT NULL"),
        Column("next_attempt_at", "real"),
        Column("lease_token", "text"),
        Column("lease_expires_at", "real"),
    ),
)

ATTEMPTS = Table(
    "webhook_attempts",
    (
        Column(
            "delivery_id", "text", "NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE"
        ),
        Column("number", "int", "NOT NULL"),
        Column("at", "real", "NOT NULL"),
        Column("status_code", "int"),
        Column("error", "text"),
        Column("duration_s", "real", "NOT NULL"),
    ),
    keys="PRIMARY KEY (delivery_id, number)",
)

TABLES = (JOBS, SEGMENTS, DELIVERIES, ATTEMPTS)

Step = Callable[[Dialect], list[str]]


def create(table: Table) -> Step:
    """CREATE TABLE with the columns of its first version."""

    def statements(d: Dialect) -> list[str]:
        lines = [table.column_sql(c, d) for c in table.of(d) if c.since == 1]
        lines += [table.keys] if table.keys else []
        return [f"CREATE TABLE {table.name} (\n    " + ",\n    ".join(lines) + "\n)"]

    return statements


def add_columns(table: Table, version: int) -> Step:
    """ALTER TABLE … ADD COLUMN for each column that ``version`` adds."""

    def statements(d: Dialect) -> list[str]:
        return [
            f"ALTER TABLE {table.name} ADD COLUMN {table.column_sql(c, d)}"
            for c in table.of(d)
            if c.since == version
        ]

    return statements


def same(*sql: str) -> Step:
    """Statements both databases spell alike."""
    return lambda d: list(sql)


@dataclass(frozen=True)
class Migration:
    version: int
    why: str
    steps: tuple[Step, ...] = ()  # for both databases
    sqlite: tuple[str, ...] = field(default=())  # then these, on SQLite only
    postgres: tuple[str, ...] = field(default=())  # … on PostgreSQL only

    def statements(self, d: Dialect) -> list[str]:
        own = self.sqlite if d.name == "sqlite" else self.postgres
        return [stmt for step in self.steps for stmt in step(d)] + list(own)


MIGRATIONS = (
    Migration(
        1,
        "jobs and their segments",
        (
            create(JOBS),
            same("CREATE INDEX jobs_queue ON jobs (status, priority DESC, created_at)"),
            create(SEGMENTS),
        ),
    ),
    Migration(2, "engine crashes apart from runs; chunks for resume", (add_columns(JOBS, 2),)),
    Migration(
        3,
        "the webhook outbox",
        (
            create(DELIVERIES),
            same(
                "CREATE INDEX webhook_deliveries_due ON webhook_deliveries "
                "(state, next_attempt_at)",
                "CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id)",
            ),
            create(ATTEMPTS),
        ),
    ),
    Migration(
        4,
        "warnings; dedupe (A11)",
        (add_columns(JOBS, 4), same("CREATE INDEX jobs_dedupe ON jobs (file_sha256, status)")),
    ),
    Migration(5, "the detected language's probability", (add_columns(JOBS, 5),)),
    Migration(
        6,
        "full-text search over segments (store/search.py)",
        (add_columns(SEGMENTS, 6),),
        # An FTS5 external-content table: the text is stored once, in segments;
        # triggers keep the index in step in the writing transaction (the segment
        # upsert is an UPDATE, so an update trigger, not REPLACE's delete).
        sqlite=(
            """CREATE VIRTUAL TABLE segments_fts USING fts5(text, content='segments',
       content_rowid='rowid', tokenize='unicode61 remove_diacritics 0')""",
            """CREATE TRIGGER segments_fts_insert AFTER INSERT ON segments BEGIN
         INSERT INTO segments_fts(rowid, text) VALUES (new.rowid, new.text);
       END""",
            """CREATE TRIGGER segments_fts_delete AFTER DELETE ON segments BEGIN
         INSERT INTO segments_fts(segments_fts, rowid, text)
         VALUES ('delete', old.rowid, old.text);
       END""",
            """CREATE TRIGGER segments_fts_update AFTER UPDATE OF text ON segments BEGIN
         INSERT INTO segments_fts(segments_fts, rowid, text)
         VALUES ('delete', old.rowid, old.text);
         INSERT INTO segments_fts(rowid, text) VALUES (new.rowid, new.text);
       END""",
            # Segments written before this version: indexed now.
            "INSERT INTO segments_fts(segments_fts) VALUES ('rebuild')",
        ),
        postgres=("CREATE INDEX segments_tsv ON segments USING GIN (tsv)",),
    ),
    Migration(7, "a live session's second pass replaces its transcript", (add_columns(JOBS, 7),)),
)

LATEST = MIGRATIONS[-1].version


def pending(version: int) -> tuple[Migration, ...]:
    """The migrations a database at ``version`` lacks, in order."""
    return tuple(m for m in MIGRATIONS if m.version > version)
