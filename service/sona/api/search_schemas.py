"""The shapes of ``GET /v1/search``'s answer, shared by the route and
``/openapi.json``."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, Field

from sona.api.schemas import iso
from sona.textsearch import SearchHit

DEFAULT_LIMIT, MAX_LIMIT = 20, 100
LANGUAGE_RE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})?$")


class SearchHitOut(BaseModel):
    """One matching segment, with what a citation needs."""

    job_id: str
    segment: int = Field(description="the segment's id (its index in the job)")
    start: float = Field(description="seconds from the start of the audio")
    end: float
    text: str = Field(description="the segment's text, as stored")
    marks: list[tuple[int, int]] = Field(
        description="the matched words: [start, end) offsets into `text`, in Unicode "
        "code points, sorted, never overlapping; the text itself carries no markup"
    )
    score: float = Field(description="higher is better; meaningful within one search only")
    file_name: str
    metadata: dict[str, Any] | None
    created_at: str = Field(description="when the job was submitted")
    language: str | None


class SearchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[SearchHitOut]
    has_more: bool
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")


def hit_out(hit: SearchHit) -> SearchHitOut:
    return SearchHitOut(
        job_id=hit.job_id,
        segment=hit.index,
        start=hit.start,
        end=hit.end,
        text=hit.text,
        marks=hit.marks,
        score=hit.score,
        file_name=hit.file_name,
        metadata=hit.metadata,
        created_at=iso(hit.created_at) or "",
        language=hit.language,
    )
