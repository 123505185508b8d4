"""Cutting a stream into chunks of speech: bounded, deterministic, and timed
back onto the recording. The detector here is a plain energy gate, so the
expected spans are known exactly; Silero itself runs in test_engine."""

from __future__ import annotations

import numpy as np

from sona.engine.chunker import SAMPLE_RATE, Chunker, RawChunk

SR = SAMPLE_RATE


def loud_spans(samples: np.ndarray) -> list[tuple[int, int]]:
    """Runs of non-zero samples, as a voice detector would report speech."""
    on = np.flatnonzero(np.diff(np.concatenate([[0], (samples != 0).astype(int), [0]])))
    return [(int(s), int(e)) for s, e in zip(on[0::2], on[1::2], strict=True)]


def signal(pattern: list[tuple[float, bool]]) -> np.ndarray:
    return np.concatenate(
        [np.full(int(s * SR), 0.5 if on else 0.0, np.float32) for s, on in pattern]
    )


def run(chunker: Chunker, samples: np.ndarray, block_s: float) -> list[RawChunk]:
    out = []
    step = int(block_s * SR)
    for at in range(0, samples.size, step):
        out += chunker.feed(samples[at : at + step])
    return out + chunker.finish()


# 10 s of speech, 2 s of silence, eight times over: 96 s.
SPEECHY = signal([(10, True), (2, False)] * 8)


def test_speech_is_merged_into_chunks_of_at_most_max_s() -> None:
    chunks = run(Chunker(loud_spans, max_s=30, window_s=40, guard_s=3), SPEECHY, block_s=7)
    assert [len(c.spans) for c in chunks] == [3, 3, 2]
    assert all(c.audio.size <= 30 * SR for c in chunks)
    # Silence is cut out; every sample of speech is in exactly one chunk.
    assert sum(c.audio.size for c in chunks) == int(80 * SR)
    assert [c.start for c in chunks] == [0.0, 36.0, 72.0]


def test_the_same_samples_give_the_same_chunks_whatever_the_blocks() -> None:
    small = run(Chunker(loud_spans, window_s=40, guard_s=3), SPEECHY, block_s=3)
    large = run(Chunker(loud_spans, window_s=40, guard_s=3), SPEECHY, block_s=30)
    assert [c.spans for c in small] == [c.spans for c in large]


def test_memory_holds_one_window_not_the_file() -> None:
    chunker = Chunker(loud_spans, window_s=40, guard_s=3)
    for at in range(0, SPEECHY.size, SR):
        chunker.feed(SPEECHY[at : at + SR])
        assert chunker._buf.size <= 41 * SR  # one window and the block that filled it


def test_without_a_detector_chunks_are_plain_slices() -> None:
    chunks = run(Chunker(None, max_s=30), np.ones(int(70 * SR), np.float32), block_s=4)
    assert [(c.start, c.end) for c in chunks] == [(0.0, 30.0), (30.0, 60.0), (60.0, 70.0)]


def test_times_inside_a_chunk_map_back_across_the_cut_silence() -> None:
    chunk = RawChunk(np.zeros(4 * SR, np.float32), [(1 * SR, 3 * SR), (10 * SR, 12 * SR)])
    assert chunk.original_time(0.5, chunk.span_at(0.5)) == 1.5
    assert chunk.original_time(2.5, chunk.span_at(2.5)) == 10.5
    # An end on the boundary stays in the first span; a start there, in the next.
    assert chunk.original_time(2.0, chunk.span_at(2.0, is_end=True)) == 3.0
    assert chunk.original_time(2.0, chunk.span_at(2.0)) == 10.0
