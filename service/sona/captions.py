"""Subtitle cues from a transcript, laid out as common subtitle practice has
them: at most ``max_line_count`` lines of at most ``max_line_width``
characters, on screen at most ``max_cue_duration`` seconds, never across a
pause, a new cue at a sentence end once the cue is half full.

Cues are cut at word times when a segment has them; otherwise a segment's text
is split into words and its time shared out in proportion to their length
(good enough to read, though a cue may then show a little early or late). A
cue never holds words of two segments: segments are where speakers change and
where the engine saw a break. Pure functions, no I/O; ``formats.py`` writes
the cues as SRT or WebVTT."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from sona.jobs import Segment, TranscribeOptions

# The request options that choose a style (TranscribeOptions fields).
OPTION_NAMES = ("max_line_width", "max_line_count", "max_cue_duration")
SENTENCE_END = (".", "?", "!", "。", "？", "！", "…")
CLAUSE_END = (*SENTENCE_END, ",", ";", ":", "，", "、")
_WORD = re.compile(r"\s*\S+")


@dataclass(frozen=True)
class CaptionStyle:
    """How cues are laid out; the defaults are common broadcast practice
    (two lines of 42 characters, 7 s at most)."""

    max_line_width: int = 42
    max_line_count: int = 2
    max_cue_duration: float = 7.0
    # A silence this long between two words ends the cue: no text on screen
    # over a pause. Not a request option: the engine's segments already end there.
    max_pause: float = 1.0


def style_of(options: TranscribeOptions) -> CaptionStyle:
    """The style a job's options ask for, the defaults where they say nothing."""
    asked = {n: getattr(options, n) for n in OPTION_NAMES if getattr(options, n) is not None}
    return CaptionStyle(**asked)


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    lines: tuple[str, ...]


@dataclass(frozen=True)
class _Token:
    text: str  # with its leading space, as Whisper writes words ("" before CJK)
    start: float
    end: float


def cues(segments: Iterable[Segment], style: CaptionStyle) -> list[Cue]:
    """The cues of ``segments`` (already in transcript order)."""
    out: list[Cue] = []
    for s in segments:
        label = f"[{s.speaker}] " if s.speaker is not None else ""
        tokens = _split_long(_tokens(s), style.max_line_width - len(label))
        out += _segment_cues(tokens, label, style)
    return out


def _tokens(s: Segment) -> list[_Token]:
    # A blank line would end a cue early and '-->' is the timing line's marker.
    def clean(text: str) -> str:
        return text.replace("-->", "->").replace("\r", " ").replace("\n", " ")

    words = [_Token(clean(w.word), w.start, w.end) for w in s.words if w.word.strip()]
    if words:
        return words
    return _spread(_WORD.findall(clean(s.text)), s.start, s.end)


def _spread(texts: list[str], start: float, end: float) -> list[_Token]:
    """Words with ``[start, end]`` shared out in proportion to their length."""
    weights = [len(t.strip()) + 1 for t in texts]
    total, at, out = sum(weights), start, []
    for text, weight in zip(texts, weights, strict=True):
        step = (end - start) * weight / total
        out.append(_Token(text, at, at + step))
        at += step
    return out


def _split_long(tokens: list[_Token], width: int) -> list[_Token]:
    """A word wider than a line (or a run of CJK text, which has no spaces) is
    cut into pieces that fit, its time shared out among them."""
    width = max(1, width)
    out: list[_Token] = []
    for tok in tokens:
        body = tok.text.strip()
        if len(body) <= width:
            out.append(tok)
            continue
        pieces = [body[i : i + width] for i in range(0, len(body), width)]
        lead = tok.text[: len(tok.text) - len(tok.text.lstrip())]
        pieces[0] = lead + pieces[0]
        out += _spread(pieces, tok.start, tok.end)
    return out


def _segment_cues(tokens: list[_Token], label: str, style: CaptionStyle) -> list[Cue]:
    """As few cues as the limits allow, evened out: filling each cue in turn can
    leave a stub ("this software") alone at the end, so the words are laid out
    again at the narrowest line width that needs no more cues."""
    groups = _group(tokens, label, style)
    low, high = 1, style.max_line_width
    while low < high:
        mid = (low + high) // 2
        if len(_group(tokens, label, replace(style, max_line_width=mid))) <= len(groups):
            high = mid
        else:
            low = mid + 1
    groups = _group(tokens, label, replace(style, max_line_width=high))
    return [_cue(g, label, style) for g in groups]


def _group(tokens: list[_Token], label: str, style: CaptionStyle) -> list[list[_Token]]:
    """Cue by cue, each filled until the next word would break a limit."""
    out: list[list[_Token]] = []
    held: list[_Token] = []
    for tok in tokens:
        while held and _breaks(held, tok, label, style):
            emit, held = _cut(held, tok, label, style)
            out.append(emit)
        held.append(tok)
    if held:
        out.append(held)
    return out


def _breaks(held: list[_Token], tok: _Token, label: str, style: CaptionStyle) -> bool:
    """Whether ``tok`` must start a new cue rather than join ``held``."""
    if tok.start - held[-1].end > style.max_pause:
        return True
    if tok.end - held[0].start > style.max_cue_duration:
        return True
    if len(_wrap([*held, tok], label, style.max_line_width)) > style.max_line_count:
        return True
    # A new sentence starts a new cue once this one is half full.
    capacity = style.max_line_width * style.max_line_count
    return held[-1].text.endswith(SENTENCE_END) and len(_text(held, label)) * 2 >= capacity


def _cut(
    held: list[_Token], tok: _Token, label: str, style: CaptionStyle
) -> tuple[list[_Token], list[_Token]]:
    """Where to end the cue that ``tok`` does not fit: after the last clause end
    in its second half, so a line reads as a phrase; else right before ``tok``.
    Words after the cut go on to the next cue."""
    if tok.start - held[-1].end > style.max_pause or held[-1].text.endswith(CLAUSE_END):
        return held, []
    for n in range(len(held) - 1, len(held) // 2, -1):
        if held[n - 1].text.endswith(CLAUSE_END):
            return held[:n], held[n:]
    return held, []


def _cue(tokens: list[_Token], label: str, style: CaptionStyle) -> Cue:
    lines = _balanced(tokens, label, style.max_line_width)
    return Cue(tokens[0].start, max(tokens[0].start, tokens[-1].end), tuple(lines))


def _text(tokens: list[_Token], label: str) -> str:
    return (label + "".join(t.text for t in tokens)).strip()


def _wrap(tokens: list[_Token], label: str, width: int) -> list[str]:
    """Greedy line filling: the fewest lines of at most ``width`` characters
    (a word wider than that alone on its line). A word joins the one before it
    with a space when it was spoken after one (Whisper's words carry their
    leading space; Chinese or Japanese ones have none)."""
    lines: list[str] = []
    line = label.strip()
    for n, tok in enumerate(tokens):
        word = tok.text.strip()
        glue = " " if line and (tok.text[:1].isspace() or (n == 0 and label)) else ""
        if line and len(line + glue + word) > width:
            lines.append(line)
            line = word
        else:
            line = line + glue + word
    if line:
        lines.append(line)
    return lines


def _balanced(tokens: list[_Token], label: str, width: int) -> list[str]:
    """As few lines as greedy filling needs, but as even as they can be: the
    narrowest width that still needs no more lines (one long and one short
    line reads worse than two of a size)."""
    lines = _wrap(tokens, label, width)
    low = max(len(t.text.strip()) for t in tokens)
    high = width
    while low < high:
        mid = (low + high) // 2
        if len(_wrap(tokens, label, mid)) <= len(lines):
            high = mid
        else:
            low = mid + 1
    return _wrap(tokens, label, high)
