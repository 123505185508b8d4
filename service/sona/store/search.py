"""Full-text search in each store's own engine: the ranked, filtered, paged
query. The query syntax, filters and cursor are ``textsearch.py``'s; the index
is ``schema.py``'s migration 6.

SQLite: an FTS5
external-content table over ``segments`` (the text is stored once, in
``segments``), kept in step by triggers, so every insert, replace,
update or delete of a segment (``add_chunks``, a dedupe copy, ``DELETE`` and
retention through the cascade) changes the index in the same transaction.
PostgreSQL: a stored generated ``tsvector`` column with a GIN index.

Only segments of ``completed`` jobs are found: a failed or cancelled job's
partial text is not a transcript, and a running job's is not final.

Ranking: the same on both stores in spirit, and, what the cursor needs, a
score that depends on the segment alone. bm25 (FTS5's default) weighs terms by
corpus statistics that move with every segment written anywhere, so a keyset
cursor over it would repeat or skip hits between pages while jobs complete.
SQLite ranks by BM25's term-frequency part with a fixed average length (12
words): matched spans ``n`` in ``w`` words score ``2.2n / (n + 1.2(0.25 +
0.75 w/12))``; PostgreSQL by ``ts_rank(tsv, q, 1)`` (occurrences, divided by
1 + log of the length). Ties break by job id, then segment index."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from typing import Any

import aiosqlite
import asyncpg

from sona.errors import QueryTooBroad
from sona.textsearch import Cursor, Query, SearchFilters, SearchHit

# Every match is scored before the sort: a query whose words are in much of
# the archive costs seconds. Past this it ends as ``QueryTooBroad`` (400).
DEADLINE_S = 3.0
TOO_BROAD = (
    "the query's words are in too much of the archive to rank them within {s:g} s: "
    "add a word, quote a phrase, or filter by job, metadata, date or language"
)

# -- SQLite ------------------------------------------------------------------

SQLITE_TABLE = "segments_fts"

# MATERIALIZED: highlight() runs once per match (a flattened subquery would
# repeat it in each expression that names ``h``). Markers are control
# characters; only their count is read.
_SQLITE_SEARCH = """
WITH m AS MATERIALIZED (
    SELECT rowid AS rid, highlight(segments_fts, 0, char(1), '') AS h
    FROM segments_fts WHERE segments_fts MATCH ?
), scored AS (
    SELECT rid, (n * 2.2) / (n + 1.2 * (0.25 + 0.75 * w / 12.0)) AS score FROM (
        SELECT rid, length(h) - length(replace(h, char(1), '')) AS n,
               length(trim(h)) - length(replace(trim(h), ' ', '')) + 1 AS w FROM m)
)
SELECT s.job_id, s.idx, s.start, s."end", s.text, j.file_name, j.metadata,
       j.created_at, j.language, x.score
FROM scored x JOIN segments s ON s.rowid = x.rid JOIN jobs j ON j.id = s.job_id
WHERE j.status = 'completed' {where}
ORDER BY x.score DESC, s.job_id, s.idx LIMIT ?"""


def _sqlite_where(filters: SearchFilters, after: Cursor | None) -> tuple[str, list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    if filters.job_id is not None:
        where.append("s.job_id = ?")
        args.append(filters.job_id)
    for key, value in filters.metadata.items():
        where.append(
            "EXISTS (SELECT 1 FROM json_each(j.metadata) e "
            "WHERE e.key = ? AND e.type = 'text' AND e.value = ?)"
        )
        args += [key, value]
    if filters.created_after is not None:
        where.append("j.created_at >= ?")
        args.append(filters.created_after)
    if filters.created_before is not None:
        where.append("j.created_at < ?")
        args.append(filters.created_before)
    if filters.language is not None:
        where.append("j.language = ?")
        args.append(filters.language)
    if after is not None:
        where.append(
            "(x.score < ? OR (x.score = ? AND (s.job_id > ? OR (s.job_id = ? AND s.idx > ?))))"
        )
        args += [after.score, after.score, after.job_id, after.job_id, after.index]
    return "".join(f" AND {w}" for w in where), args


async def sqlite_search(
    db: Any, query: Query, filters: SearchFilters, *, limit: int, after: Cursor | None
) -> tuple[list[SearchHit], bool]:
    """Up to ``limit`` hits after ``after``, and whether more follow. ``db``:
    the store's aiosqlite connection, its lock held by the caller."""
    where, args = _sqlite_where(filters, after)
    sql = _SQLITE_SEARCH.format(where=where)
    async with db.execute(sql, (query.fts5(), *args, limit + 1)) as cur:
        rows = list(await cur.fetchall())
    return [_hit(query, r) for r in rows[:limit]], len(rows) > limit


class SqliteReader:
    """The searches' own connection to the store's file, opened on first use.
    WAL lets it read while the store's connection writes: a search matching
    much of the archive (seconds: every match is scored) never holds the
    store's lock, so chunk writes and claims go on meanwhile."""

    def __init__(self, path: str, *, deadline_s: float = DEADLINE_S) -> None:
        self._path = path
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()  # one statement sequence at a time on it
        self._deadline_s = deadline_s
        self._ends_at = 0.0

    def _past_deadline(self) -> int:
        """SQLite's progress handler (on aiosqlite's thread): non-zero interrupts."""
        return int(time.monotonic() > self._ends_at)

    async def search(
        self, query: Query, filters: SearchFilters, *, limit: int, after: Cursor | None
    ) -> tuple[list[SearchHit], bool]:
        async with self._lock:
            if self._db is None:
                db = await aiosqlite.connect(self._path, isolation_level=None)
                db.row_factory = aiosqlite.Row
                await db.execute("PRAGMA query_only=ON")
                await db.execute("PRAGMA busy_timeout=10000")
                await db.set_progress_handler(self._past_deadline, 1000)
                self._db = db
            self._ends_at = time.monotonic() + self._deadline_s
            try:
                return await sqlite_search(self._db, query, filters, limit=limit, after=after)
            except sqlite3.OperationalError as exc:
                if "interrupted" not in str(exc):
                    raise
                raise QueryTooBroad(TOO_BROAD.format(s=self._deadline_s), param="q") from None

    async def close(self) -> None:
        async with self._lock:
            if self._db is not None:
                await self._db.close()
                self._db = None


# -- PostgreSQL ----------------------------------------------------------------

# Version 6. Non-alphanumerics become spaces before the ``simple`` parser sees
# the text, so ``3.14``, ``e-mail`` or an address split into words as in FTS5
# (the parser would keep them whole). Adding the column rewrites the table:
# segments written before this version are indexed by it.

_POSTGRES_SEARCH = """
SELECT * FROM (
    SELECT s.job_id, s.idx, s.start, s."end", s.text, j.file_name, j.metadata,
           j.created_at, j.language, ts_rank(s.tsv, q, 1)::float8 AS score
    FROM segments s JOIN jobs j ON j.id = s.job_id,
         to_tsquery('simple'::regconfig, $1) q
    WHERE s.tsv @@ q AND j.status = 'completed' {where}
) x {after}
ORDER BY score DESC, job_id COLLATE "C", idx LIMIT {limit}"""


def _postgres_sql(
    filters: SearchFilters, after: Cursor | None, limit: int
) -> tuple[str, list[Any]]:
    where: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args) + 1}"  # $1 is the query

    if filters.job_id is not None:
        where.append(f"s.job_id = {arg(filters.job_id)}")
    for key, value in filters.metadata.items():
        k = arg(key)
        where.append(
            f"jsonb_typeof(j.metadata::jsonb -> {k}) = 'string' "
            f"AND j.metadata::jsonb ->> {k} = {arg(value)}"
        )
    if filters.created_after is not None:
        where.append(f"j.created_at >= {arg(filters.created_after)}")
    if filters.created_before is not None:
        where.append(f"j.created_at < {arg(filters.created_before)}")
    if filters.language is not None:
        where.append(f"j.language = {arg(filters.language)}")
    after_sql = ""
    if after is not None:
        s, j, i = arg(after.score), arg(after.job_id), arg(after.index)
        after_sql = (
            f"WHERE score < {s} OR (score = {s} AND "
            f'(job_id > {j} COLLATE "C" OR (job_id = {j} AND idx > {i})))'
        )
    sql = _POSTGRES_SEARCH.format(
        where="".join(f" AND {w}" for w in where), after=after_sql, limit=arg(limit + 1)
    )
    return sql, args


async def postgres_search(
    db: Any,
    query: Query,
    filters: SearchFilters,
    *,
    limit: int,
    after: Cursor | None,
    deadline_s: float = DEADLINE_S,
) -> tuple[list[SearchHit], bool]:
    """As ``sqlite_search``, on an asyncpg connection, within ``deadline_s``."""
    sql, args = _postgres_sql(filters, after, limit)
    try:
        async with db.transaction(readonly=True):
            await db.execute(f"SET LOCAL statement_timeout = {max(1, round(deadline_s * 1000))}")
            rows = await db.fetch(sql, query.tsquery(), *args)
    except asyncpg.QueryCanceledError:
        raise QueryTooBroad(TOO_BROAD.format(s=deadline_s), param="q") from None
    return [_hit(query, r) for r in rows[:limit]], len(rows) > limit


def _hit(query: Query, row: Any) -> SearchHit:
    return SearchHit(
        job_id=row["job_id"],
        index=row["idx"],
        start=row["start"],
        end=row["end"],
        text=row["text"],
        marks=query.marks(row["text"]),
        score=float(row["score"]),
        file_name=row["file_name"],
        metadata=json.loads(row["metadata"]) if row["metadata"] else None,
        created_at=row["created_at"],
        language=row["language"],
    )
