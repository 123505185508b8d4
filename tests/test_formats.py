"""Every output format parses back to what went in: JSON loads (and OpenAI's
own response models accept it), subtitle timestamps match their grammar and
round-trip to the millisecond, TSV keeps three columns."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from openai.types.audio import Transcription, TranscriptionVerbose

from sona.errors import InvalidRequest
from sona.formats import FORMATS, full_text, render
from sona.jobs import Job, Segment, Status, TranscribeOptions, Word

SRT_CUE = re.compile(
    r"(\d+)\n(\d{2,}:\d{2}:\d{2},\d{3}) --> (\d{2,}:\d{2}:\d{2},\d{3})\n((?:.+\n)+)\n"
)
VTT_CUE = re.compile(r"(\d{2,}:\d{2}:\d{2}\.\d{3}) --> (\d{2,}:\d{2}:\d{2}\.\d{3})\n((?:.+\n)+)\n")


def make_job(**kw: Any) -> Job:
    base: dict[str, Any] = dict(
        id="j1", status=Status.COMPLETED, options=TranscribeOptions(), model="tiny.en",
        priority=0, file_path="/x", file_name="a.wav", file_sha256="aaa", file_size=1,
        created_at=0.0, duration=12.5, language="en",
    )  # fmt: skip
    base.update(kw)
    return Job(**base)


def seg(index: int, start: float, end: float, text: str, **kw: Any) -> Segment:
    return Segment(index=index, start=start, end=end, text=text, **kw)


SEGMENTS = [
    seg(0, 0.0, 2.5, " The quick brown fox.", tokens=[50363, 383], avg_logprob=-0.2),
    seg(1, 2.5, 5.25, " Jumps over the lazy dog. "),
]


def parse_clock(stamp: str) -> float:
    hours, minutes, rest = stamp.replace(",", ".").split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(rest)


def strict_json(body: str) -> Any:
    def reject(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(body, parse_constant=reject)


def test_full_text_strips_and_joins_with_single_spaces() -> None:
    segments = [*SEGMENTS, seg(2, 5.25, 6.0, "   "), seg(3, 6.0, 7.0, "\tEnd.\n")]
    assert full_text(segments) == "The quick brown fox. Jumps over the lazy dog. End."
    assert full_text([]) == ""


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [
        ("text", "text/plain; charset=utf-8"),
        ("json", "application/json"),
        ("verbose_json", "application/json"),
        ("srt", "application/x-subrip"),
        ("vtt", "text/vtt"),
        ("tsv", "text/tab-separated-values"),
        ("jsonl", "application/x-ndjson"),
    ],
)
def test_content_types(fmt: str, content_type: str) -> None:
    assert render(make_job(), SEGMENTS, fmt)[1] == content_type


def test_formats_lists_every_renderable_format() -> None:
    assert set(FORMATS) == {"text", "json", "verbose_json", "srt", "vtt", "tsv", "jsonl"}


@pytest.mark.parametrize("fmt", ["", "TEXT", "xml", "srt "])
def test_unknown_format_raises_invalid_request(fmt: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        render(make_job(), SEGMENTS, fmt)
    assert info.value.param == "format"
    assert "verbose_json" in info.value.message


def test_text_is_the_full_text_with_a_trailing_newline() -> None:
    body, _ = render(make_job(), SEGMENTS, "text")
    assert body == "The quick brown fox. Jumps over the lazy dog.\n"


def test_json_is_openais_shape() -> None:
    body, _ = render(make_job(), SEGMENTS, "json")
    assert strict_json(body) == {"text": "The quick brown fox. Jumps over the lazy dog."}
    assert Transcription.model_validate_json(body).text.startswith("The quick")


def test_verbose_json_is_openais_shape() -> None:
    job = make_job(options=TranscribeOptions(task="translate"), language="de")
    data = strict_json(render(job, SEGMENTS, "verbose_json")[0])
    assert set(data) == {"task", "language", "duration", "text", "segments"}  # no words
    assert (data["task"], data["language"], data["duration"]) == ("translate", "de", 12.5)
    assert data["text"] == full_text(SEGMENTS)
    first = data["segments"][0]
    assert set(first) == {
        "id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob",
        "compression_ratio", "no_speech_prob",
    }  # fmt: skip
    assert (first["id"], first["start"], first["end"]) == (0, 0.0, 2.5)
    assert first["tokens"] == [50363, 383] and first["avg_logprob"] == -0.2
    parsed = TranscriptionVerbose.model_validate(data)
    assert [s.end for s in parsed.segments or []] == [2.5, 5.25]


def test_verbose_json_words_and_speakers_only_when_present() -> None:
    words = [Word(" The", 0.0, 0.4, 0.9), Word(" fox.", 0.4, 1.0, 0.8)]
    segments = [
        seg(0, 0.0, 1.0, " The fox.", words=words, speaker="left"),
        seg(1, 1.0, 2.0, " No words here.", speaker=None),
    ]
    data = strict_json(render(make_job(), segments, "verbose_json")[0])
    assert data["words"] == [
        {"word": "The", "start": 0.0, "end": 0.4},
        {"word": "fox.", "start": 0.4, "end": 1.0},
    ]
    assert data["segments"][0]["speaker"] == "left"
    assert "speaker" not in data["segments"][1]
    parsed = TranscriptionVerbose.model_validate(data)
    assert [w.word for w in parsed.words or []] == ["The", "fox."]


def test_verbose_json_duration_falls_back_to_the_last_segment() -> None:
    data = json.loads(render(make_job(duration=None), SEGMENTS, "verbose_json")[0])
    assert data["duration"] == 5.25
    empty = json.loads(render(make_job(duration=None), [], "verbose_json")[0])
    assert empty["duration"] == 0.0


def test_non_finite_scores_stay_strict_json() -> None:
    bad = [seg(0, 0.0, 1.0, " x", avg_logprob=float("-inf"), compression_ratio=float("nan"))]
    data = strict_json(render(make_job(), bad, "verbose_json")[0])
    assert data["segments"][0]["avg_logprob"] is None
    assert data["segments"][0]["compression_ratio"] is None


def test_srt_cues_parse_and_round_trip_times() -> None:
    body, _ = render(make_job(), SEGMENTS, "srt")
    cues = SRT_CUE.findall(body)
    assert SRT_CUE.sub("", body) == ""  # nothing outside the cue grammar
    assert [int(c[0]) for c in cues] == [1, 2]
    assert [(parse_clock(c[1]), parse_clock(c[2])) for c in cues] == [(0.0, 2.5), (2.5, 5.25)]
    assert [c[3] for c in cues] == ["The quick brown fox.\n", "Jumps over the lazy dog.\n"]
    assert "00:00:02,500 --> 00:00:05,250" in body


def test_vtt_has_header_and_dotted_timestamps() -> None:
    body, _ = render(make_job(), SEGMENTS, "vtt")
    assert body.startswith("WEBVTT\n\n")
    cues = VTT_CUE.findall(body)
    assert VTT_CUE.sub("", body.removeprefix("WEBVTT\n\n")) == ""
    assert [(parse_clock(c[0]), parse_clock(c[1])) for c in cues] == [(0.0, 2.5), (2.5, 5.25)]
    assert "00:00:02.500 --> 00:00:05.250" in body


@pytest.mark.parametrize(
    ("seconds", "srt", "vtt"),
    [
        (3725.5, "01:02:05,500", "01:02:05.500"),
        (359999.999, "99:59:59,999", "99:59:59.999"),
        (360000.0, "100:00:00,000", "100:00:00.000"),
        (1.0004, "00:00:01,000", "00:00:01.000"),  # to the nearest millisecond
        (0.0006, "00:00:00,001", "00:00:00.001"),
        (59.9996, "00:01:00,000", "00:01:00.000"),  # rounding carries into minutes
    ],
)
def test_timestamps_past_an_hour_and_rounding(seconds: float, srt: str, vtt: str) -> None:
    segments = [seg(0, seconds, seconds + 1.0, " late")]
    srt_body = render(make_job(), segments, "srt")[0]
    vtt_body = render(make_job(), segments, "vtt")[0]
    assert f"\n{srt} --> " in srt_body and SRT_CUE.fullmatch(srt_body)
    assert f"\n{vtt} --> " in vtt_body and VTT_CUE.fullmatch(vtt_body.split("\n\n", 1)[1])
    assert parse_clock(srt) == pytest.approx(seconds, abs=0.0005)


def test_speaker_prefix_in_subtitles_and_tsv() -> None:
    segments = [seg(0, 0.0, 1.0, " Hello left.", speaker="left"), seg(1, 1.0, 2.0, " Hi.")]
    assert "\n[left] Hello left.\n" in render(make_job(), segments, "srt")[0]
    assert "\n[left] Hello left.\n" in render(make_job(), segments, "vtt")[0]
    assert "\nHi.\n" in render(make_job(), segments, "srt")[0]
    rows = render(make_job(), segments, "tsv")[0].splitlines()
    assert rows[1:] == ["0\t1000\t[left] Hello left.", "1000\t2000\tHi."]


def test_newlines_and_empty_segments_keep_subtitles_well_formed() -> None:
    segments = [
        seg(0, 0.0, 1.0, " line one\n\n  line two "),
        seg(1, 1.0, 2.0, "  \n "),  # no text: no cue, numbering stays continuous
        seg(2, 2.0, 3.0, " a --> b"),
    ]
    body = render(make_job(), segments, "srt")[0]
    cues = SRT_CUE.findall(body)
    assert SRT_CUE.sub("", body) == ""
    # Lines are laid out anew (captions.py): the text's own line breaks are spaces.
    assert [(c[0], c[3]) for c in cues] == [("1", "line one line two\n"), ("2", "a -> b\n")]
    vtt = render(make_job(), segments, "vtt")[0]
    assert "-->" not in vtt.replace(" --> ", "")  # only in timing lines
    assert len(VTT_CUE.findall(vtt)) == 2


def test_vtt_escapes_markup_characters() -> None:
    body = render(make_job(), [seg(0, 0.0, 1.0, " <b>R&D</b> is > 3")], "vtt")[0]
    assert "&lt;b&gt;R&amp;D&lt;/b&gt; is &gt; 3\n" in body


def test_unicode_survives_every_format() -> None:
    text = "Grüße — 你好 🎉"
    segments = [seg(0, 0.0, 1.0, f" {text}")]
    for fmt in FORMATS:
        body = render(make_job(), segments, fmt)[0]
        assert text in body, fmt  # written as is, not \u-escaped
    assert json.loads(render(make_job(), segments, "json")[0])["text"] == text


def test_tsv_is_three_integer_millisecond_columns() -> None:
    segments = [*SEGMENTS, seg(2, 5.25, 3601.0005, " tab\there\nand newline")]
    lines = render(make_job(), segments, "tsv")[0].splitlines()
    assert lines[0] == "start\tend\ttext"
    rows = [line.split("\t") for line in lines[1:]]
    assert all(len(r) == 3 for r in rows)
    assert [(int(r[0]), int(r[1])) for r in rows] == [(0, 2500), (2500, 5250), (5250, 3601000)]
    assert rows[2][2] == "tab here and newline"


def test_jsonl_one_object_per_segment() -> None:
    words = [Word(" Hi", 0.0, 0.5, 0.9)]
    segments = [*SEGMENTS, seg(2, 5.25, 6.0, " Hi", words=words, speaker="right")]
    body = render(make_job(), segments, "jsonl")[0]
    assert body.endswith("\n")
    objs = [strict_json(line) for line in body.splitlines()]
    verbose = json.loads(render(make_job(), segments, "verbose_json")[0])["segments"]
    assert [o["text"] for o in objs] == [s["text"] for s in verbose]
    assert objs[0] == {"id": 0, "start": 0.0, "end": 2.5, "text": " The quick brown fox."}
    assert objs[2] == {
        "id": 2, "start": 5.25, "end": 6.0, "text": " Hi", "speaker": "right",
        "words": [{"word": "Hi", "start": 0.0, "end": 0.5}],
    }  # fmt: skip


def test_float_noise_is_not_rendered() -> None:
    segments = [seg(0, 0.1 + 0.2, 1.2000000000000002, " x")]
    data = json.loads(render(make_job(), segments, "verbose_json")[0])
    assert (data["segments"][0]["start"], data["segments"][0]["end"]) == (0.3, 1.2)


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("text", "\n"),
        ("json", '{"text": ""}'),
        ("srt", ""),
        ("vtt", "WEBVTT\n\n"),
        ("tsv", "start\tend\ttext\n"),
        ("jsonl", ""),
    ],
)
def test_no_segments(fmt: str, expected: str) -> None:
    assert render(make_job(), [], fmt)[0] == expected


def test_no_segments_verbose_json() -> None:
    data = strict_json(render(make_job(), [], "verbose_json")[0])
    assert data["segments"] == [] and data["text"] == "" and "words" not in data
    TranscriptionVerbose.model_validate(data)
