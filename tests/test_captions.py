"""Caption layout (captions.py): every cue keeps to the line width, the line
count and the duration it is given, never spans a pause, and loses no word."""

from __future__ import annotations

import random

import pytest

from sona.captions import CaptionStyle, Cue, cues, style_of
from sona.jobs import Segment, TranscribeOptions, Word

TEXT = (
    "Ask not what your country can do for you, ask what you can do for your country. "
    "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. "
    "It is easy to tell the depth of a well. These days a chicken leg is a rare dish, "
    "and rice is often served in round bowls."
)


def worded(text: str, start: float = 0.0, rate: float = 0.35, pause_after: int = -1) -> Segment:
    """A segment with one word every ``rate`` seconds (a 2 s pause after word
    number ``pause_after``), as the engine gives with word timestamps."""
    words, at = [], start
    for n, w in enumerate(text.split()):
        words.append(Word(" " + w, at, at + rate * 0.8))
        at += rate + (2.0 if n == pause_after else 0.0)
    return Segment(index=0, start=start, end=at, text=" " + text, words=words)


def all_words(cue_list: list[Cue]) -> list[str]:
    return [w for c in cue_list for line in c.lines for w in line.split()]


def check(cue_list: list[Cue], style: CaptionStyle) -> None:
    for c in cue_list:
        assert 1 <= len(c.lines) <= style.max_line_count, c
        assert all(len(line) <= style.max_line_width for line in c.lines), c
        assert c.end - c.start <= style.max_cue_duration + 1e-9, c
        assert all(line == line.strip() and line for line in c.lines), c


@pytest.mark.parametrize(
    "style",
    [
        CaptionStyle(),
        CaptionStyle(max_line_width=20, max_line_count=1, max_cue_duration=3.0),
        CaptionStyle(max_line_width=32, max_line_count=3, max_cue_duration=10.0),
        CaptionStyle(max_line_width=10, max_line_count=2, max_cue_duration=1.0),
    ],
)
def test_word_timed_cues_keep_to_width_lines_and_duration(style: CaptionStyle) -> None:
    got = cues([worded(TEXT)], style)
    check(got, style)
    # Nothing lost, nothing reordered (a word wider than the line is cut in pieces).
    assert "".join(all_words(got)) == "".join(TEXT.split())
    assert len(got) > 1


def test_defaults_are_two_lines_of_42_for_at_most_seven_seconds() -> None:
    style = style_of(TranscribeOptions())
    assert (style.max_line_width, style.max_line_count, style.max_cue_duration) == (42, 2, 7.0)
    got = cues([worded(TEXT)], style)
    check(got, style)
    # Lines are filled: a 2-line cue is not cut after a few words.
    assert max(len(c.lines) for c in got) == 2


def test_options_choose_the_style() -> None:
    style = style_of(TranscribeOptions(max_line_width=30, max_cue_duration=4.5))
    assert style == CaptionStyle(max_line_width=30, max_line_count=2, max_cue_duration=4.5)


def test_no_cue_spans_a_pause() -> None:
    seg = worded(TEXT, pause_after=8)  # 2 s of silence after "you,"
    got = cues([seg], CaptionStyle(max_cue_duration=30.0, max_line_count=10))
    gap_start, gap_end = seg.words[8].end, seg.words[9].start
    assert not any(c.start < gap_end and c.end > gap_start for c in got)
    assert got[0].lines[-1].endswith("you,")


def test_a_sentence_end_starts_a_new_cue_once_the_cue_is_half_full() -> None:
    got = cues([worded(TEXT)], CaptionStyle(max_line_count=3, max_cue_duration=60.0))
    assert got[0].lines[-1].endswith("country.")
    assert " ".join(got[1].lines).startswith("The birch canoe")


def test_a_segment_without_words_is_split_in_proportion_to_its_text() -> None:
    seg = Segment(index=0, start=10.0, end=40.0, text=" " + TEXT)
    style = CaptionStyle()
    got = cues([seg], style)
    check(got, style)
    assert all_words(got) == TEXT.split()
    assert got[0].start == 10.0 and got[-1].end == pytest.approx(40.0)
    # Back to back, in order, inside the segment.
    assert all(a.end <= b.start + 1e-9 for a, b in zip(got, got[1:], strict=False))


def test_lines_are_balanced() -> None:
    words = "one two three four five six seven eight nine ten eleven"
    got = cues([worded(words)], CaptionStyle(max_line_width=42, max_cue_duration=60.0))
    assert len(got) == 1 and len(got[0].lines) == 2
    first, second = got[0].lines
    assert abs(len(first) - len(second)) <= 6  # not 42 characters and then 10


def test_a_long_word_and_text_without_spaces_are_cut_to_fit() -> None:
    cjk = Segment(
        index=0, start=0.0, end=6.0, text="我们今天在这里讨论一个非常重要的问题然后我们回家吃饭"
    )
    style = CaptionStyle(max_line_width=10, max_line_count=2, max_cue_duration=7.0)
    got = cues([cjk], style)
    check(got, style)
    assert "".join("".join(c.lines) for c in got) == cjk.text


def test_cues_never_mix_segments_and_carry_the_speaker() -> None:
    left = worded("hello there how are you", start=0.0)
    right = Segment(**{**left.__dict__, "speaker": "right", "start": 0.5})
    got = cues([left, right], CaptionStyle())
    assert [c.lines[0].startswith("[right]") for c in got] == [False, True]
    assert all(len(line) <= 42 for c in got for line in c.lines)


def test_subtitle_markers_and_newlines_do_not_break_the_file() -> None:
    seg = Segment(index=0, start=0.0, end=2.0, text=" a --> b\n\nc")
    got = cues([seg], CaptionStyle())
    assert all("-->" not in line and "\n" not in line for c in got for line in c.lines)


def test_random_texts_keep_every_limit() -> None:
    rng = random.Random(7)
    vocab = TEXT.split() + ["extraordinarily", "a", "I", "incomprehensibilities,"]
    for _ in range(200):
        style = CaptionStyle(
            max_line_width=rng.randint(24, 60),
            max_line_count=rng.randint(1, 3),
            max_cue_duration=rng.uniform(2.0, 8.0),
        )
        text = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 80)))
        seg = worded(text, rate=rng.uniform(0.15, 0.6), pause_after=rng.randint(-1, 20))
        got = cues([seg], style)
        check(got, style)
        assert all_words(got) == text.split()
