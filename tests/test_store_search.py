"""The search share of the JobStore contract, on both stores (SQLite FTS5,
PostgreSQL tsvector): ranking, phrases and prefixes, filters, pagination while
other jobs complete, deleted and replaced segments, FTS syntax in user input,
and the migration indexing segments written before it."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from sona.errors import InvalidQuery, QueryTooBroad
from sona.jobs import Segment, Status
from sona.store import JobStore, schema
from sona.store.postgres import PostgresStore
from sona.store.search import SqliteReader, postgres_search
from sona.store.sql import POSTGRES
from sona.store.sqlite import SqliteStore
from sona.textsearch import Cursor, SearchFilters, SearchHit, parse
from tests.pg import pg_schema_url
from tests.test_store_contract import new_job


async def transcribed(
    store: JobStore,
    texts: list[str],
    *,
    status: Status = Status.COMPLETED,
    language: str = "en",
    **kw: Any,
) -> str:
    """A job whose segments say ``texts`` (segment i from i*2 s to i*2+1.5 s),
    ended in ``status``: its id."""
    job, _ = await store.create(new_job(**kw))
    claim = await store.claim(worker_id="w", prefer_models=[], lease_s=30)
    assert claim is not None and claim.job.id == job.id
    await store.set_info(claim, duration=10.0, language=language)
    segs = [Segment(index=i, start=i * 2.0, end=i * 2.0 + 1.5, text=t) for i, t in enumerate(texts)]
    await store.add_chunks(claim, first=0, count=1, segments=segs, processed_seconds=10.0)
    if status != Status.PROCESSING:
        await store.finish(claim, status)
    return job.id


async def search(
    store: JobStore, q: str, filters: SearchFilters | None = None, *, limit: int = 50
) -> list[SearchHit]:
    hits, _ = await store.search(parse(q), filters or SearchFilters(), limit=limit, after=None)
    return hits


def keys(hits: list[SearchHit]) -> list[tuple[str, int]]:
    return [(h.job_id, h.index) for h in hits]


async def test_hits_carry_times_text_marks_and_the_job(store: JobStore) -> None:
    a = await transcribed(
        store,
        [" The quarterly budget is due.", " Nothing to see here."],
        metadata={"team": "ops"},
        file_name="meeting.wav",
    )
    [hit] = await search(store, "BUDGET")
    assert (hit.job_id, hit.index, hit.start, hit.end) == (a, 0, 0.0, 1.5)
    assert hit.text == " The quarterly budget is due."
    assert [hit.text[s:e] for s, e in hit.marks] == ["budget"]
    assert hit.file_name == "meeting.wav" and hit.metadata == {"team": "ops"}
    assert hit.language == "en" and hit.created_at > 0


async def test_every_word_must_match_and_more_occurrences_rank_higher(store: JobStore) -> None:
    a = await transcribed(
        store,
        [
            " apple with pie and cream and sugar today",  # 0: two matches
            " apple with pie and apple and apple today",  # 1: four, same length
            " apple only here",  # 2: no pie
            " apple with pie",  # 3: two, shorter than 0
        ],
    )
    order = [i for _, i in keys(await search(store, "apple pie"))]
    assert sorted(order) == [0, 1, 3]
    assert order.index(1) < order.index(0) and order.index(3) < order.index(0)
    assert all(j == a for j, _ in keys(await search(store, "apple pie")))


async def test_phrase_and_prefix_queries(store: JobStore) -> None:
    a = await transcribed(
        store,
        [" the red car stopped", " the car was red", " redistribution of cars", " Red Cardinal"],
    )
    assert keys(await search(store, '"red car"')) == [(a, 0)]
    assert sorted(keys(await search(store, "red*"))) == [(a, 0), (a, 1), (a, 2), (a, 3)]
    assert sorted(keys(await search(store, '"red car*"'))) == [(a, 0), (a, 3)]
    [hit] = await search(store, '"red card*"')
    assert [hit.text[s:e] for s, e in hit.marks] == ["Red", "Cardinal"]
    # A word that holds punctuation is the phrase of its parts, as indexed.
    b = await transcribed(store, [" send an e-mail, don't wait: it's 3.14"])
    assert keys(await search(store, "e-mail dont")) == []
    assert keys(await search(store, "e-mail don't 3.14")) == [(b, 0)]


async def test_only_completed_jobs_are_found(store: JobStore) -> None:
    done = await transcribed(store, [" zebra crossing"])
    await transcribed(store, [" zebra failed"], status=Status.FAILED)
    await transcribed(store, [" zebra running"], status=Status.PROCESSING)
    assert [h.job_id for h in await search(store, "zebra")] == [done]


async def test_filters_job_metadata_created_and_language(store: JobStore) -> None:
    a = await transcribed(store, [" falcon one"], metadata={"team": "ops", "n": 3})
    b = await transcribed(store, [" falcon two"], metadata={"team": "dev"}, language="fr")
    c = await transcribed(store, [" falcon three"], metadata={"n": "3"})
    created = {j: (await store.get(j)).created_at for j in (a, b, c)}

    async def ids(**f: Any) -> set[str]:
        return {h.job_id for h in await search(store, "falcon", SearchFilters(**f))}

    assert await ids() == {a, b, c}
    assert await ids(job_id=b) == {b}
    assert await ids(metadata={"team": "ops"}) == {a}
    assert await ids(metadata={"n": "3"}) == {c}  # string values only: a's 3 is a number
    assert await ids(metadata={"team": "ops", "n": "3"}) == set()
    assert await ids(language="fr") == {b}
    assert await ids(created_after=created[b]) == {b, c}
    assert await ids(created_before=created[b]) == {a}
    assert await ids(created_after=created[b], created_before=created[c]) == {b}


async def test_pages_neither_repeat_nor_skip_while_other_jobs_complete(store: JobStore) -> None:
    texts = [" heron " + "word " * n for n in range(6)]
    before = {(await transcribed(store, texts)) for _ in range(4)}
    expected = await search(store, "heron")
    assert len(expected) == 24 and {h.job_id for h in expected} == before
    seen: list[SearchHit] = []
    after: Cursor | None = None
    pages = 0
    while True:
        page, more = await store.search(parse("heron"), SearchFilters(), limit=5, after=after)
        seen += page
        pages += 1
        # Jobs completing meanwhile: matching ones (ranking above, among and
        # below the page) and others, which move bm25-style corpus statistics.
        await transcribed(store, [" heron heron", " heron " + "x " * 40, " nothing"])
        if not more:
            break
        after = page[-1].cursor
    assert pages >= 5
    old = [k for k in keys(seen) if k[0] in before]
    assert len(old) == len(set(old)) == 24  # none repeated, none skipped
    assert old == keys(expected)  # in the order the first page saw


async def test_deleted_jobs_are_gone_and_replaced_segments_reindexed(store: JobStore) -> None:
    a = await transcribed(store, [" walrus song"])
    b = await transcribed(store, [" walrus dance"])
    await store.delete(a)
    assert [h.job_id for h in await search(store, "walrus")] == [b]
    assert await search(store, "song") == []
    # A segment stored again under the same index replaces the old words.
    job, _ = await store.create(new_job())
    claim = await store.claim(worker_id="w", prefer_models=[], lease_s=30)
    assert claim is not None
    old, new = Segment(index=0, start=0, end=1, text=" otter"), Segment(0, 0, 1, " beaver")
    await store.add_chunks(claim, first=0, count=1, segments=[old], processed_seconds=1)
    await store.add_chunks(claim, first=1, count=1, segments=[new], processed_seconds=2)
    await store.finish(claim, Status.COMPLETED)
    assert await search(store, "otter") == []
    assert keys(await search(store, "beaver")) == [(job.id, 0)]


FTS_SYNTAX = [
    '"',
    '"unbalanced',
    'a "b" "c',
    "*",
    "***",
    "NEAR",
    "NEAR(alpha beta)",
    "alpha NEAR beta",
    "NEAR/2",
    "-alpha",
    "alpha -beta",
    "alpha OR beta",
    "alpha AND NOT beta",
    "text:alpha",
    ":",
    "{text}: alpha",
    "^alpha",
    "(alpha",
    "alpha)",
    "alpha*beta",
    "+alpha",
    "alpha''beta",
    "alpha & beta | !gamma",
    "'alpha':*",
    "alpha <-> beta",
    "\\",
    "%_",
    "''",
    "\x00alpha",
    "a" * 501,
]


@pytest.mark.parametrize("q", FTS_SYNTAX)
async def test_fts_syntax_in_a_query_is_a_valid_query_or_invalid_query(
    store: JobStore, q: str
) -> None:
    a = await transcribed(store, [" alpha beta gamma near text"])
    try:
        query = parse(q)
    except InvalidQuery:
        return
    hits, _ = await store.search(query, SearchFilters(), limit=10, after=None)
    assert {h.job_id for h in hits} <= {a}


async def test_plain_words_from_fts_syntax_find_their_segment(store: JobStore) -> None:
    a = await transcribed(store, [" alpha beta gamma near text"])
    plain = ["NEAR (alpha) beta", "text: alpha", "-alpha", "alpha (beta)"]
    plain += ["alpha*beta", "gamma:near"]
    for q in plain:
        assert [h.job_id for h in await search(store, q)] == [a], q


async def test_sqlite_migration_indexes_segments_written_before_it(tmp_path: Path) -> None:
    path = str(tmp_path / "db.sqlite")
    store = await SqliteStore.open(path)
    a = await transcribed(store, [" pelican brief"])
    await store.close()
    with sqlite3.connect(path) as db:  # back to version 5: no index (6), no `refines` (7)
        for name in ("insert", "delete", "update"):
            db.execute(f"DROP TRIGGER segments_fts_{name}")
        db.execute("DROP TABLE segments_fts")
        db.execute("ALTER TABLE jobs DROP COLUMN refines")
        db.execute("PRAGMA user_version = 5")
    store = await SqliteStore.open(path)
    try:
        assert [h.job_id for h in await search(store, "pelican")] == [a]
    finally:
        await store.close()


async def test_postgres_migration_indexes_segments_written_before_it() -> None:
    async with pg_schema_url() as url:
        conn = await asyncpg.connect(url)
        await conn.execute("CREATE TABLE sona_schema (version INTEGER NOT NULL)")
        for migration in schema.MIGRATIONS[:5]:
            for stmt in migration.statements(POSTGRES):
                await conn.execute(stmt)
            await conn.execute("INSERT INTO sona_schema (version) VALUES ($1)", migration.version)
        await conn.execute(
            """INSERT INTO jobs (id, status, options, file_path, file_name, file_sha256,
               file_size, max_attempts, created_at) VALUES ('old', 'completed', '{}', '/x',
               'a.wav', 'aaa', 1, 2, 0)"""
        )
        await conn.execute(
            """INSERT INTO segments (job_id, idx, start, "end", text, data)
               VALUES ('old', 0, 1.0, 2.0, ' pelican brief', '{}')"""
        )
        await conn.close()
        store = await PostgresStore.open(url)
        try:
            [hit] = await search(store, "pelican")
            assert (hit.job_id, hit.start, hit.end) == ("old", 1.0, 2.0)
        finally:
            await store.close()


async def test_sqlite_search_past_its_deadline_is_query_too_broad(tmp_path: Path) -> None:
    path = str(tmp_path / "db.sqlite")
    store = await SqliteStore.open(path)
    reader = SqliteReader(path, deadline_s=0.0)
    try:
        a = await transcribed(store, [f" gnu and gnu {i}" for i in range(3000)])
        with pytest.raises(QueryTooBroad):
            await reader.search(parse("gnu"), SearchFilters(), limit=5, after=None)
        hits = await search(store, "gnu", limit=5)  # the store's own deadline: seconds
        assert [h.job_id for h in hits] == [a] * 5
    finally:
        await reader.close()
        await store.close()


async def test_postgres_search_past_its_deadline_is_query_too_broad() -> None:
    async with pg_schema_url() as url:
        store = await PostgresStore.open(url)
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(
                """INSERT INTO jobs (id, status, options, file_path, file_name, file_sha256,
                   file_size, max_attempts, created_at) VALUES ('big', 'completed', '{}',
                   '/x', 'a.wav', 'aaa', 1, 2, 0)"""
            )
            await conn.execute(
                """INSERT INTO segments (job_id, idx, start, "end", text, data)
                   SELECT 'big', g, g, g + 1, ' gnu and gnu ' || g, '{}'
                   FROM generate_series(0, 29999) g"""
            )
            with pytest.raises(QueryTooBroad):
                await postgres_search(
                    conn, parse("gnu"), SearchFilters(), limit=5, after=None, deadline_s=0.001
                )
            assert len(await search(store, "gnu", limit=5)) == 5
        finally:
            await conn.close()
            await store.close()
