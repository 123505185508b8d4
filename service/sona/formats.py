"""Transcript output formats: ``render(job, segments, fmt)`` gives the body and
its content type. The JSON shapes are OpenAI's (``json``, ``verbose_json``) so
OpenAI clients parse them unchanged, built as the models of
``transcript_shapes`` (the ones ``/openapi.json`` shows); ``srt``, ``vtt`` and ``tsv`` follow what
Whisper's own writers produce. Pure functions, no I/O."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from pathlib import PurePath
from typing import Any

from sona.captions import CaptionStyle, Cue, cues, style_of
from sona.errors import InvalidRequest
from sona.jobs import Job, Segment, Word
from sona.transcript_shapes import SegmentOut, TranscriptionOut, VerboseTranscriptionOut, WordOut


def in_order(segments: Iterable[Segment]) -> list[Segment]:
    """The transcript's one order: by time, then as stored. Segments are stored
    as they are decoded (two channels interleave); everything that shows a
    transcript — the job's text, every format — reads them through here."""
    return sorted(segments, key=lambda s: (s.start, s.index))


def full_text(segments: Iterable[Segment]) -> str:
    """The transcript as one string: the job record's ``text`` and the
    ``text``/``json`` formats both come from here, so they always agree."""
    return " ".join(t for t in (s.text.strip() for s in in_order(segments)) if t)


def render(
    job: Job, segments: list[Segment], fmt: str, style: CaptionStyle | None = None
) -> tuple[str, str]:
    """``(body, content_type)`` for ``segments`` of ``job`` in format ``fmt``;
    SRT and WebVTT cues are laid out in ``style``, else as the job's options ask."""
    if fmt in _SUBTITLES:
        laid_out = cues(in_order(segments), style or style_of(job.options))
        return _subtitles(fmt, laid_out), _SUBTITLES[fmt]
    try:
        writer, content_type = _WRITERS[fmt]
    except KeyError:
        raise InvalidRequest(
            f"unknown format {fmt!r}; use one of: {', '.join(FORMATS)}", param="format"
        ) from None
    return writer(job, in_order(segments)), content_type


def _text(job: Job, segments: list[Segment]) -> str:
    return full_text(segments) + "\n"


def _json(job: Job, segments: list[Segment]) -> str:
    return _dump(TranscriptionOut(text=full_text(segments), **_warnings(job)))


def _warnings(job: Job) -> dict[str, Any]:
    """``{"warnings": [...]}`` when the job has any (``audio_truncated``); nothing
    otherwise, so a clean transcript is exactly OpenAI's shape."""
    return {"warnings": list(job.warnings)} if job.warnings else {}


def _verbose_json(job: Job, segments: list[Segment]) -> str:
    duration = (
        job.duration if job.duration is not None else max((s.end for s in segments), default=0.0)
    )
    body: dict[str, Any] = {
        "task": job.options.task,
        "language": job.language or job.options.language,
        "duration": _seconds(duration),
        "text": full_text(segments),
        "segments": [_openai_segment(s) for s in segments],
    }
    # Only the fields given are written (exclude_unset): Sona's extras are
    # absent, not null, where they do not apply.
    if job.language_probability is not None:  # Sona's: absent when the request named it
        body["language_probability"] = job.language_probability
    # OpenAI sends "words" only when word timestamps were asked for; an empty
    # list would tell a client they were asked for and none were found.
    if any(s.words for s in segments):
        body["words"] = [_word(w) for s in segments for w in s.words]
    body.update(_warnings(job))
    return _dump(VerboseTranscriptionOut(**body))


def _openai_segment(s: Segment) -> SegmentOut:
    out: dict[str, Any] = {
        "id": s.index,
        "seek": s.seek,
        "start": _seconds(s.start),
        "end": _seconds(s.end),
        "text": s.text,
        "tokens": list(s.tokens),
        "temperature": _finite(s.temperature),
        "avg_logprob": _finite(s.avg_logprob),
        "compression_ratio": _finite(s.compression_ratio),
        "no_speech_prob": _finite(s.no_speech_prob),
    }
    if s.speaker is not None:
        out["speaker"] = s.speaker
    return SegmentOut(**out)


def _jsonl(job: Job, segments: list[Segment]) -> str:
    lines = []
    for s in segments:
        obj: dict[str, Any] = {
            "id": s.index,
            "start": _seconds(s.start),
            "end": _seconds(s.end),
            # As stored, like verbose_json's segments: joining these with
            # full_text() gives the same transcript as every other format.
            "text": s.text,
        }
        if s.speaker is not None:
            obj["speaker"] = s.speaker
        if s.words:
            obj["words"] = [_word(w).model_dump() for w in s.words]
        lines.append(_dumps(obj) + "\n")
    return "".join(lines)


def _subtitles(fmt: str, cue_list: list[Cue]) -> str:
    """SRT or WebVTT, one block per cue; a cue's lines never hold a blank line."""
    if fmt == "srt":
        return "".join(
            f"{n}\n{_clock(c.start, ',')} --> {_clock(c.end, ',')}\n" + "\n".join(c.lines) + "\n\n"
            for n, c in enumerate(cue_list, 1)
        )
    # Cue text is markup in WebVTT: a bare '<' or '&' would start a tag or an entity.
    return "WEBVTT\n\n" + "".join(
        f"{_clock(c.start, '.')} --> {_clock(c.end, '.')}\n"
        + "\n".join(map(_vtt_text, c.lines))
        + "\n\n"
        for c in cue_list
    )


def _vtt_text(line: str) -> str:
    return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _tsv(job: Job, segments: list[Segment]) -> str:
    # Integer milliseconds and one line per segment, as Whisper's tsv writer:
    # tabs and newlines inside the text would split a row.
    rows = ["start\tend\ttext\n"]
    for s in segments:
        text = " ".join(_speaker_prefix(s, s.text).split())
        rows.append(f"{_millis(s.start)}\t{_millis(s.end)}\t{text}\n")
    return "".join(rows)


def _speaker_prefix(s: Segment, text: str) -> str:
    return f"[{s.speaker}] {text.strip()}" if s.speaker is not None else text.strip()


def _word(w: Word) -> WordOut:
    # faster-whisper keeps each word's leading space; OpenAI's words have none.
    return WordOut(word=w.word.strip(), start=_seconds(w.start), end=_seconds(w.end))


def _clock(seconds: float, decimal_marker: str) -> str:
    """HH:MM:SS,mmm (SRT) or HH:MM:SS.mmm (WebVTT); hours grow past 99 if needed."""
    ms = _millis(seconds)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_marker}{ms:03d}"


def _millis(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _seconds(value: float) -> float:
    # Times are stored to the millisecond; float noise from arithmetic on them
    # should not show up as 1.2000000000000002 in the output.
    return round(float(value), 3)


def _finite(value: float) -> float | None:
    # json.dumps writes inf/nan as bare Infinity/NaN, which strict JSON
    # parsers (and OpenAI clients) reject.
    return float(value) if math.isfinite(value) else None


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, allow_nan=False)


def _dump(model: TranscriptionOut | VerboseTranscriptionOut) -> str:
    return _dumps(model.model_dump(exclude_unset=True))


_Writer = Callable[[Job, list[Segment]], str]

_WRITERS: dict[str, tuple[_Writer, str]] = {
    "text": (_text, "text/plain; charset=utf-8"),
    "json": (_json, "application/json"),
    "verbose_json": (_verbose_json, "application/json"),
    "tsv": (_tsv, "text/tab-separated-values"),
    "jsonl": (_jsonl, "application/x-ndjson"),
}

# Subtitles are laid out as cues (captions.py) before they are written.
_SUBTITLES: dict[str, str] = {"srt": "application/x-subrip", "vtt": "text/vtt"}

CONTENT_TYPES: dict[str, str] = {
    **{fmt: content_type for fmt, (_, content_type) in _WRITERS.items()},
    **_SUBTITLES,
}
FORMATS: tuple[str, ...] = ("text", "json", "verbose_json", "srt", "vtt", "tsv", "jsonl")

# What a file name's extension says about its format, for `-o FILE` in the CLI.
# The first format of each is the one chosen when no --format is given.
EXTENSIONS: dict[str, tuple[str, ...]] = {
    ".txt": ("text",),
    ".json": ("json", "verbose_json"),
    ".srt": ("srt",),
    ".vtt": ("vtt",),
    ".tsv": ("tsv",),
    ".jsonl": ("jsonl",),
}


def format_for_output(path: str | None, explicit: str | None) -> str:
    """The format to write to ``path``: ``explicit`` when given (it must be one
    of FORMATS and agree with a known extension), else the extension's, else
    text. Raises ValueError with the message a user should see."""
    if explicit is not None and explicit not in FORMATS:
        raise ValueError(f"unknown format {explicit!r}; use one of: {', '.join(FORMATS)}")
    suffix = "" if path is None else PurePath(path).suffix.lower()
    implied = EXTENSIONS.get(suffix)
    if explicit is None:
        return implied[0] if implied else "text"
    if implied and explicit not in implied:
        raise ValueError(
            f"--format {explicit} does not match the output file {path} "
            f"({suffix} is {' or '.join(implied)}); change one of them"
        )
    return explicit
