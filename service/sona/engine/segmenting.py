"""Cutting a chunk's timed words into sentence-sized segments.

A chunk holds up to ~20 s of speech; as one segment it makes a 20 s subtitle
cue and a 20 s click-to-play. Segments end where a sentence does or the
speaker pauses; one still over ``max_s`` is cut again at its best inner
point (a clause mark, the model's own segment end, the longest pause), so
segments run a few seconds and pass ``max_s`` only where one word does.

Pure: words in, index ranges out; the times are the words' own."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MAX_S = 8.0  # a segment longer than this is cut again
PAUSE_S = 0.8  # a silence this long between words ends a segment
MIN_S = 1.0  # an inner cut leaves at least this much on each side, where it can
SENTENCE_END = (".", "?", "!", "。", "？", "！")
CLAUSE_END = (",", ";", ":", "，", "；", "：", "、")


@dataclass(frozen=True)
class Timed:
    """A word as the splitter sees it; ``closes``: the model ended a
    timestamp segment after it."""

    text: str
    start: float
    end: float
    closes: bool = False


def sentences(words: Sequence[Timed], *, max_s: float = MAX_S) -> list[tuple[int, int]]:
    """``[start, end)`` ranges of ``words``, in order, covering every word once."""
    cuts, at = [], 0
    for n, word in enumerate(words):
        last = n == len(words) - 1
        if last or _ends_sentence(word) or words[n + 1].start - word.end >= PAUSE_S:
            cuts.append((at, n + 1))
            at = n + 1
    return [piece for a, b in cuts for piece in _shorten(words, a, b, max_s)]


def _ends_sentence(word: Timed) -> bool:
    return word.text.rstrip("\"'”’)]}").endswith(SENTENCE_END)


def _shorten(words: Sequence[Timed], a: int, b: int, max_s: float) -> list[tuple[int, int]]:
    """``words[a:b]`` as it is, or cut in two at its best point, each half again."""
    if b - a < 2 or words[b - 1].end - words[a].start <= max_s:
        return [(a, b)]
    cut = max(range(a + 1, b), key=lambda n: _score(words, a, b, n))
    return _shorten(words, a, cut, max_s) + _shorten(words, cut, b, max_s)


def _score(words: Sequence[Timed], a: int, b: int, n: int) -> tuple[bool, int, float, float]:
    """How good a cut before ``words[n]`` is: both sides long enough first, then
    the mark ending the word before it, then the pause, then nearness to the middle."""
    before, after = words[n - 1], words[n]
    balanced = before.end - words[a].start >= MIN_S and words[b - 1].end - after.start >= MIN_S
    text = before.text.rstrip()
    mark = 3 if text.endswith(SENTENCE_END) else 2 if text.endswith(CLAUSE_END) else 0
    mark = max(mark, 1 if before.closes else 0)
    middle = (words[a].start + words[b - 1].end) / 2
    return balanced, mark, round(after.start - before.end, 1), -abs(before.end - middle)
