"""PostgreSQL for the tests: the server on 127.0.0.1:5432 (trust auth, database
``test``, user postgres), a fresh schema per test. Tests skip, saying why, only
where no server answers there."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

PG_BASE = "postgresql://postgres@127.0.0.1:5432/test"


async def _connect() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(PG_BASE, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        pytest.skip(f"no PostgreSQL at {PG_BASE}: {type(exc).__name__}: {exc}")


@asynccontextmanager
async def pg_schema_url() -> AsyncIterator[str]:
    """A store URL whose tables live in a new, empty schema, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = await _connect()
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        yield f"{PG_BASE}?search_path={schema}"
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


def pg_reachable() -> str | None:
    """None when the server answers; else why not, as a skip reason. For sync
    fixtures (module-scoped ones that start processes)."""
    import asyncio

    async def probe() -> None:
        conn = await asyncpg.connect(PG_BASE, timeout=5)
        await conn.close()

    try:
        asyncio.run(probe())
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"no PostgreSQL at {PG_BASE}: {type(exc).__name__}: {exc}"
    return None
