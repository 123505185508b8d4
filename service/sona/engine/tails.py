"""Where a window's decoded text stops, and whether the rest must be decoded again.

A batched decode has no seek: a small Whisper model that emits end-of-text
before its window's audio is used up (typically where one voice hands over
to another) silently drops the speech after it. Decoding with timestamp
tokens makes the stop visible: the last closing timestamp says how far the
text reaches. A window whose text ends well before its audio does is decoded
again from there (``engine/passes.py`` does, in one more batched pass).

Pure: token ids in, pieces and a resume time out. Every threshold is in
seconds or words per second, so it holds for every model size."""

from __future__ import annotations

from dataclasses import dataclass, field

# Decoded text ending more than this before its window's audio: the rest is
# decoded again. VAD chunks end within ~0.4 s (its padding) of their last speech.
TAIL_S = 2.0
# A closing piece this sparse, over more than TAIL_S, is a jump into the
# silence that pads the window to 30 s (``… planks.<|9.00|><|9.00|> The<|25.54|>``),
# not speech: it is dropped and the audio from its start decoded again.
PADDING_WORDS_PER_S = 0.5
# Whisper's timestamp tokens step by 20 ms.
TIME_PRECISION = 0.02


@dataclass
class Piece:
    """Text between two timestamp tokens; ``end`` is None while unclosed."""

    start: float
    end: float | None
    tokens: list[int] = field(default_factory=list)


def pieces(tokens: list[int], timestamp_begin: int, eot: int) -> list[Piece]:
    """The decoder's output cut at its timestamp tokens, in window time. Special
    tokens are dropped; text before any timestamp starts at 0."""
    out: list[Piece] = []
    start: float | None = None
    last = 0.0
    for token in tokens:
        if token >= timestamp_begin:
            last = (token - timestamp_begin) * TIME_PRECISION
            if out and out[-1].end is None:
                out[-1].end = last  # closes the open piece
            else:
                start = last  # opens one (or moves an empty one's start)
        elif token < eot:
            if not out or out[-1].end is not None:
                out.append(Piece(last if start is None else start, None))
                start = None
            out[-1].tokens.append(token)
    return out


def settle(
    found: list[Piece], duration: float, words: list[int], *, final: bool
) -> tuple[list[Piece], float | None]:
    """The pieces to keep, and the window time to decode again from (None: the
    text covers the window). ``words`` counts each piece's words. ``final``:
    no further pass will run, so an unclosed piece is kept as it is."""
    kept = list(found)
    counts = list(words)
    # The closing piece's jump into padding is not speech.
    if kept and kept[-1].end is not None and _padding(kept[-1], counts[-1]):
        kept.pop()
        counts.pop()
    closed = [p for p in kept if p.end is not None]
    reach = max((p.end for p in closed if p.end is not None), default=0.0)
    if len(found) > len(kept):  # after a dropped jump the speech goes on from its start
        reach = found[len(kept)].start
    early = duration - reach > TAIL_S and reach > 0.0  # from 0 the same audio reads the same
    if final or not early:
        return [p if p.end is not None else Piece(p.start, duration, p.tokens) for p in kept], None
    # An unclosed piece is decoded again from the last timestamp, as faster-whisper's seek.
    return [p for p in kept if p.end is not None and p.end <= reach], reach


def _padding(piece: Piece, words: int) -> bool:
    assert piece.end is not None
    length = piece.end - piece.start
    return length > TAIL_S and words / length < PADDING_WORDS_PER_S
