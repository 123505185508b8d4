"""Cutting a stream of samples into chunks of at most ``max_s`` seconds of
speech: the unit a batch is made of. Pure numpy; the voice detector is passed
in (``engine/whisper.py`` owns Silero).

With a detector, speech spans are merged into chunks the way faster-whisper's
``collect_chunks`` does (silence between spans is cut out), but over a moving
window so memory never holds more than ``window_s`` of audio: spans that end
well before the window's edge are final, the rest is detected again with the
next samples. Without one, chunks are plain ``max_s`` slices."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

SAMPLE_RATE = 16_000
Spans = list[tuple[int, int]]  # [start, end) in samples
SpeechDetector = Callable[[np.ndarray], Spans]


@dataclass
class RawChunk:
    """Speech to decode in one batch row: ``audio`` is the spans' samples back to
    back; ``spans`` are where they came from, in samples of the whole channel."""

    audio: np.ndarray
    spans: Spans

    @property
    def start(self) -> float:
        return self.spans[0][0] / SAMPLE_RATE

    @property
    def end(self) -> float:
        return self.spans[-1][1] / SAMPLE_RATE

    def span_at(self, t: float, *, is_end: bool = False) -> int:
        """Which span a time inside ``audio`` (seconds) falls in; an end time on a
        boundary belongs to the span before it."""
        sample, before = t * SAMPLE_RATE, 0
        for n, (start, end) in enumerate(self.spans):
            before += end - start
            if sample < before or (is_end and sample <= before):
                return n
        return len(self.spans) - 1

    def original_time(self, t: float, span: int) -> float:
        """A time inside ``audio`` as a time of the recording, within ``span``."""
        before = sum(e - s for s, e in self.spans[:span])
        start, end = self.spans[span]
        sample = min(max(start, start + t * SAMPLE_RATE - before), end)
        return round(sample / SAMPLE_RATE, 3)


@dataclass
class Chunker:
    """Feed blocks with ``feed``, then ``finish``; each returns the chunks that
    are complete. Deterministic: the same samples always give the same chunks,
    which is what lets a re-run skip the chunks already stored. ``start``: where
    the first sample fed sits in the channel (a cut from the middle of a file),
    so that the chunks' spans are times of the whole recording."""

    detect: SpeechDetector | None
    max_s: float = 30.0
    window_s: float = 120.0
    guard_s: float = 5.0  # speech this close to the window's edge may go on
    start: int = 0
    _buf: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    _buf_start: int = 0  # sample position of _buf[0] in the channel
    _open: list[tuple[np.ndarray, tuple[int, int]]] = field(default_factory=list)
    _open_len: int = 0

    def __post_init__(self) -> None:
        self._buf_start = self.start

    def feed(self, block: np.ndarray) -> list[RawChunk]:
        self._buf = np.concatenate([self._buf, block])
        if self.detect is None:
            return self._slices(final=False)
        if self._buf.size < self.window_s * SAMPLE_RATE:
            return []
        return self._scan(final=False)

    def finish(self) -> list[RawChunk]:
        if self.detect is None:
            return self._slices(final=True)
        return self._scan(final=True)

    def _slices(self, *, final: bool) -> list[RawChunk]:
        size = int(self.max_s * SAMPLE_RATE)
        out = []
        while self._buf.size >= size or (final and self._buf.size):
            take = self._buf[:size]
            span = (self._buf_start, self._buf_start + take.size)
            out.append(RawChunk(take.copy(), [span]))
            self._buf, self._buf_start = self._buf[take.size :], span[1]
        return out

    def _scan(self, *, final: bool) -> list[RawChunk]:
        assert self.detect is not None
        spans = [(s + self._buf_start, e + self._buf_start) for s, e in self.detect(self._buf)]
        buf_end = self._buf_start + self._buf.size
        edge = buf_end if final else buf_end - int(self.guard_s * SAMPLE_RATE)
        done = [sp for sp in spans if sp[1] <= edge]
        rest = spans[len(done) :]
        # Detect again from the first unfinished span, or from the guard zone.
        cut = min(rest[0][0] if rest else edge, edge)
        cut = max(cut, done[-1][1] if done else self._buf_start)
        out = []
        for span in done:
            out += self._add(span)
        self._buf = self._buf[cut - self._buf_start :]
        self._buf_start = cut
        if final:
            out += self._close()
        return out

    def _add(self, span: tuple[int, int]) -> list[RawChunk]:
        """Add a final span to the open chunk, closing it first when the span
        would take it past ``max_s`` (as faster-whisper's collect_chunks)."""
        length = span[1] - span[0]
        out = []
        if self._open and self._open_len + length > self.max_s * SAMPLE_RATE:
            out = self._close()
        samples = self._buf[span[0] - self._buf_start : span[1] - self._buf_start]
        self._open.append((samples.copy(), span))
        self._open_len += length
        return out

    def _close(self) -> list[RawChunk]:
        if not self._open:
            return []
        chunk = RawChunk(np.concatenate([a for a, _ in self._open]), [s for _, s in self._open])
        self._open, self._open_len = [], 0
        return [chunk]
