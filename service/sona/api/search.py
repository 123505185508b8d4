"""``GET /v1/search``: full-text search over the segments of completed jobs
(docs/api.md: the query syntax, the marks, the cursor). The store's engine
does the matching and ranking (``store/search.py``); this reads the query
string and shapes the page."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from aiohttp import web
from multidict import MultiMapping

from sona.api.schemas import json_model
from sona.api.search_schemas import (
    DEFAULT_LIMIT,
    LANGUAGE_RE,
    MAX_LIMIT,
    SearchList,
    hit_out,
)
from sona.errors import InvalidRequest
from sona.jobs import validate_job_id
from sona.keys import STORE
from sona.textsearch import Cursor, SearchFilters, parse

routes = web.RouteTableDef()

METADATA_PREFIX = "metadata."
MAX_METADATA_FILTERS = 8


def _time(q: MultiMapping[str], name: str) -> float | None:
    """ISO 8601 (no zone: UTC) or epoch seconds."""
    if name not in q:
        return None
    text = q[name]
    try:
        ts = float(text)
    except ValueError:
        try:
            when = datetime.fromisoformat(text)
            ts = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
        except (ValueError, OverflowError):
            raise InvalidRequest(
                f"{name} must be an ISO 8601 time or epoch seconds", param=name
            ) from None
    if not math.isfinite(ts):
        raise InvalidRequest(f"{name} must be a finite time", param=name)
    return ts


def _metadata(q: MultiMapping[str]) -> dict[str, str]:
    prefix = METADATA_PREFIX
    pairs = {k.removeprefix(prefix): v for k, v in q.items() if k.startswith(prefix)}
    if len(pairs) > MAX_METADATA_FILTERS:
        raise InvalidRequest(f"at most {MAX_METADATA_FILTERS} metadata filters", param="metadata")
    for key, value in pairs.items():
        if not key or "\x00" in key + value or len(key) > 256 or len(value) > 1024:
            raise InvalidRequest(
                "metadata.KEY=VALUE: a key of 1-256 characters, a value of at most 1024, no NUL",
                param="metadata",
            )
    return pairs


def filters_of(q: MultiMapping[str]) -> SearchFilters:
    language = q.get("language")
    if language is not None and not LANGUAGE_RE.match(language):
        raise InvalidRequest("language must be a language code such as en", param="language")
    return SearchFilters(
        job_id=validate_job_id(q["job_id"]) if "job_id" in q else None,
        metadata=_metadata(q),
        created_after=_time(q, "created_after"),
        created_before=_time(q, "created_before"),
        language=language,
    )


def limit_of(q: MultiMapping[str]) -> int:
    try:
        limit = int(q.get("limit", str(DEFAULT_LIMIT)))
    except ValueError:
        raise InvalidRequest("limit must be an integer", param="limit") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}", param="limit")
    return limit


@routes.get("/v1/search")
async def search(request: web.Request) -> web.Response:
    q = request.query
    if not q.get("q"):
        raise InvalidRequest("q is required: the words to search for", param="q")
    query = parse(q["q"])
    filters, limit = filters_of(q), limit_of(q)
    after = Cursor.decode(q["cursor"]) if "cursor" in q else None
    hits, more = await request.app[STORE].search(query, filters, limit=limit, after=after)
    return json_model(
        SearchList(
            data=[hit_out(h) for h in hits],
            has_more=more,
            next_cursor=hits[-1].cursor.encode() if more and hits else None,
        )
    )
