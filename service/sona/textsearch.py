"""Full-text search over transcripts, the pure part: the one query syntax users
write, its translation into each store's engine (SQLite FTS5, PostgreSQL
``tsquery``), the filters, the cursor and the marked words of a hit.

The syntax (docs/api.md): words, all of which a segment must hold; ``"a
phrase"``, its words in that order; ``word*``, any word starting so. Every
other character separates words: ``-``, ``:``, ``(``, ``NEAR``, ``OR`` and the
like are plain text, never an engine operator, because the engines' own
syntax never sees user input: each word reaches it as a quoted token of
letters and digits. An odd number of ``"`` is ``InvalidQuery`` (400), as is a
query with no word at all.

Words are runs of letters and digits (``_`` and punctuation separate them),
compared case-insensitively, diacritics significant: what FTS5's
``unicode61 remove_diacritics 0`` tokenizer and PostgreSQL's ``simple``
configuration over the text with non-alphanumerics blanked both do, so the two
stores find the same segments."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from sona.errors import InvalidQuery, InvalidRequest
from sona.jobs import JOB_ID_RE

MAX_QUERY_CHARS = 500
MAX_TERMS = 16
MAX_CURSOR_CHARS = 200  # a score, a job id of at most 64 characters, an index
# Letters and digits: FTS5 unicode61's token characters (categories L*, N*).
TOKEN = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class Term:
    """One word (one token) or one phrase (several, in order); with ``prefix``
    the last token matches any word it begins."""

    tokens: tuple[str, ...]
    prefix: bool = False


@dataclass(frozen=True)
class Query:
    """A parsed query: every term must match (AND)."""

    terms: tuple[Term, ...]

    def fts5(self) -> str:
        """FTS5 MATCH text: each term a quoted string (tokens are letters and
        digits, so no quote or operator can appear inside), ANDed."""
        return " ".join(
            '"' + " ".join(t.tokens) + '"' + (" *" if t.prefix else "") for t in self.terms
        )

    def tsquery(self) -> str:
        """``to_tsquery('simple', …)`` text: quoted lexemes, ``<->`` inside a
        phrase, ``:*`` on a prefix, ``&`` between terms."""
        parts = []
        for t in self.terms:
            lexemes = [f"'{tok}'" for tok in t.tokens]
            if t.prefix:
                lexemes[-1] += ":*"
            parts.append("(" + " <-> ".join(lexemes) + ")")
        return " & ".join(parts)

    def marks(self, text: str) -> list[tuple[int, int]]:
        """The spans of ``text`` (code point offsets, end exclusive) that match
        a term: each word of a phrase found in order, each word or prefix.
        Sorted, never overlapping."""
        words = [(m.start(), m.end(), m.group().lower()) for m in TOKEN.finditer(text)]
        spans: set[tuple[int, int]] = set()
        for term in self.terms:
            n = len(term.tokens)
            for i in range(len(words) - n + 1):
                if _matches(term, [w[2] for w in words[i : i + n]]):
                    spans.update((w[0], w[1]) for w in words[i : i + n])
        return sorted(spans)


def _matches(term: Term, words: list[str]) -> bool:
    *whole, last = term.tokens
    if words[: len(whole)] != whole:
        return False
    return words[-1].startswith(last) if term.prefix else words[-1] == last


def parse(text: str) -> Query:
    """``text`` in the user syntax → a ``Query``, or ``InvalidQuery``."""
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidQuery(f"the query is longer than {MAX_QUERY_CHARS} characters", param="q")
    if text.count('"') % 2:
        raise InvalidQuery('the query has an unbalanced " (quote a phrase: "two words")', param="q")
    terms: list[Term] = []
    for i, part in enumerate(text.split('"')):
        if i % 2:  # inside quotes: one phrase
            terms.extend(_term(part.strip()))
        else:
            for word in part.split():
                terms.extend(_term(word))
    if not terms:
        raise InvalidQuery("the query has no word to search for", param="q")
    if len(terms) > MAX_TERMS:
        raise InvalidQuery(f"the query has more than {MAX_TERMS} terms", param="q")
    return Query(tuple(terms))


def _term(chunk: str) -> list[Term]:
    """A word or a phrase; ``don't`` or ``e-mail`` are phrases of their parts,
    as the text was indexed. A ``*`` right after the last letter: a prefix."""
    tokens = tuple(t.lower() for t in TOKEN.findall(chunk))
    if not tokens:
        return []
    prefix = chunk.endswith("*") and TOKEN.fullmatch(chunk.rstrip("*")[-1:]) is not None
    return [Term(tokens, prefix)]


@dataclass(frozen=True)
class SearchFilters:
    """What narrows a search: one job, metadata string values, creation time
    (epoch seconds, ``after`` inclusive, ``before`` exclusive), language."""

    job_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    created_after: float | None = None
    created_before: float | None = None
    language: str | None = None


@dataclass(frozen=True)
class Cursor:
    """Where a page ended: the last hit's score and key. The score depends on
    the segment's own text alone, so it stays put while others are written."""

    score: float
    job_id: str
    index: int

    def encode(self) -> str:
        raw = json.dumps([self.score, self.job_id, self.index]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            if len(text) > MAX_CURSOR_CHARS:  # nor JSON nested deep enough to recurse
                raise ValueError(text)
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            score, job_id, index = json.loads(raw)
            if not (
                isinstance(score, int | float)
                and math.isfinite(score)
                and isinstance(job_id, str)
                and JOB_ID_RE.match(job_id)
                and isinstance(index, int)
                and 0 <= index < 2**31
            ):
                raise ValueError(text)
            return cls(float(score), job_id, index)
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
            raise InvalidRequest(
                "cursor is not one this server handed out", param="cursor"
            ) from None


@dataclass(frozen=True)
class SearchHit:
    """One matching segment of a completed job, with its job's particulars."""

    job_id: str
    index: int
    start: float
    end: float
    text: str
    marks: list[tuple[int, int]]
    score: float
    file_name: str
    metadata: dict[str, Any] | None
    created_at: float
    language: str | None

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.score, self.job_id, self.index)
