"""Sentence-sized segments from timed words (engine/segmenting.py), and where a
window's decoded text stops (engine/tails.py): pure functions, no model."""

from __future__ import annotations

from sona.engine.segmenting import MAX_S, Timed, sentences
from sona.engine.tails import TAIL_S, Piece, pieces, settle

TS = 50_000  # a timestamp_begin; token t >= TS means time (t - TS) * 0.02 s
EOT = 49_999


def spoken(text: str, start: float = 0.0, word_s: float = 0.4, gap_s: float = 0.1) -> list[Timed]:
    """``text``'s words, one after another at a steady pace."""
    out, at = [], start
    for w in text.split():
        out.append(Timed(" " + w, at, at + word_s))
        at += word_s + gap_s
    return out


def texts(words: list[Timed], ranges: list[tuple[int, int]]) -> list[str]:
    return ["".join(w.text for w in words[a:b]).strip() for a, b in ranges]


def test_segments_end_at_sentence_ends() -> None:
    words = spoken("It is late. Are you coming? Yes!")
    assert texts(words, sentences(words)) == ["It is late.", "Are you coming?", "Yes!"]


def test_a_pause_ends_a_segment_without_punctuation() -> None:
    words = spoken("so we went", 0.0) + spoken("and then came back", 3.0)
    assert texts(words, sentences(words)) == ["so we went", "and then came back"]


def test_a_long_sentence_is_cut_at_a_clause_mark() -> None:
    first = spoken("one two three four five six seven eight nine ten eleven,")
    rest = spoken("twelve thirteen fourteen fifteen sixteen", first[-1].end + 0.1)
    rest += spoken("seventeen eighteen nineteen twenty.", rest[-1].end + 0.6)
    words = first + rest
    ranges = sentences(words)
    assert texts(words, ranges)[0].endswith("eleven,")
    assert texts(words, ranges)[1].startswith("twelve")
    assert all(words[b - 1].end - words[a].start <= MAX_S for a, b in ranges)


def test_a_sentence_of_any_length_ends_up_under_the_limit() -> None:
    words = spoken(" ".join(["word"] * 200) + ".")  # 100 s, no mark, no pause
    ranges = sentences(words)
    assert [i for a, b in ranges for i in range(a, b)] == list(range(len(words)))
    assert all(words[b - 1].end - words[a].start <= MAX_S for a, b in ranges)
    assert min(words[b - 1].end - words[a].start for a, b in ranges) >= 2.0  # not shredded


def test_one_word_longer_than_the_limit_stays_whole() -> None:
    words = [Timed(" Ooooh", 0.0, 20.0), Timed(" yes.", 20.1, 20.5)]
    assert sentences(words) == [(0, 1), (1, 2)]
    assert sentences([Timed(" Ooooh", 0.0, 20.0)]) == [(0, 1)]


def test_no_words_no_segments() -> None:
    assert sentences([]) == []


def test_the_model_s_own_segment_ends_break_ties() -> None:
    words = spoken("a b c d e f g h i j k l m n o p q r s t")  # 10 s
    words[5] = Timed(words[5].text, words[5].start, words[5].end, closes=True)
    assert sentences(words)[0] == (0, 6)


# -- tails --------------------------------------------------------------------------


def ts(seconds: float) -> int:
    return TS + round(seconds / 0.02)


def test_pieces_follow_the_timestamp_tokens() -> None:
    tokens = [ts(0), 1, 2, ts(2.0), ts(2.0), 3, ts(4.5), ts(5.0), 4, 5]
    got = pieces(tokens, TS, EOT)
    assert got == [Piece(0.0, 2.0, [1, 2]), Piece(2.0, 4.5, [3]), Piece(5.0, None, [4, 5])]


def test_text_covering_its_window_is_kept_whole() -> None:
    found = [Piece(0.0, 8.0, [1]), Piece(8.0, 19.0, [2])]
    assert settle(found, 20.0, [20, 25], final=False) == (found, None)


def test_text_that_stops_early_is_decoded_again_from_its_last_timestamp() -> None:
    found = [Piece(0.0, 4.0, [1]), Piece(4.0, 9.5, [2])]
    assert settle(found, 20.0, [10, 12], final=False) == (found, 9.5)


def test_an_unclosed_piece_is_decoded_again_unless_it_is_the_last_pass() -> None:
    found = [Piece(0.0, 5.0, [1]), Piece(5.0, None, [2])]
    assert settle(found, 20.0, [10, 3], final=False) == ([found[0]], 5.0)
    kept, resume = settle(found, 20.0, [10, 3], final=True)
    assert resume is None and kept[-1] == Piece(5.0, 20.0, [2])


def test_a_jump_into_the_padding_is_dropped_and_decoded_again() -> None:
    # "… planks.<|9.00|><|9.00|> The<|25.54|>": one word over 16.5 s is no speech.
    found = [Piece(0.0, 9.0, [1]), Piece(9.0, 25.54, [2])]
    assert settle(found, 20.0, [15, 1], final=False) == ([found[0]], 9.0)
    assert settle(found, 20.0, [15, 1], final=True) == ([found[0]], None)


def test_a_slow_speaker_is_not_mistaken_for_padding() -> None:
    found = [Piece(0.0, 9.0, [1]), Piece(9.0, 19.5, [2])]
    assert settle(found, 20.0, [15, 6], final=False) == (found, None)


def test_nothing_decoded_is_not_decoded_again() -> None:
    """From 0 the same audio would read the same: nothing to gain."""
    assert settle([], 20.0, [], final=False) == ([], None)


def test_a_short_tail_is_left_alone() -> None:
    found = [Piece(0.0, 20.0 - TAIL_S + 0.1, [1])]
    assert settle(found, 20.0, [30], final=False) == (found, None)
