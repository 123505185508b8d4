"""The JSON transcript shapes, declared once as pydantic models: OpenAI's
``json`` and ``verbose_json`` responses (with Sona's extras, each optional and
absent when it does not apply). ``formats.render`` builds its JSON bodies
from these models and ``/openapi.json`` shows the same models, so the body
and its documentation cannot drift apart."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

WARNINGS_DOC = "Sona's: what went wrong without failing the job (`audio_truncated`)"


class TranscriptionOut(BaseModel):
    """OpenAI's `json` response."""

    text: str
    warnings: list[str] | None = Field(None, description=WARNINGS_DOC)


class SegmentOut(BaseModel):
    """A verbose_json segment; also the data of an SSE `segment` event."""

    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float | None
    avg_logprob: float | None
    compression_ratio: float | None
    no_speech_prob: float | None
    speaker: str | None = None


class WordOut(BaseModel):
    word: str
    start: float
    end: float


class VerboseTranscriptionOut(BaseModel):
    """OpenAI's `verbose_json` response; `words` only when asked for."""

    task: Literal["transcribe", "translate"]
    language: str | None
    duration: float
    text: str
    segments: list[SegmentOut] | None = None
    # Sona's: the detector's probability, when the language was detected.
    language_probability: float | None = None
    words: list[WordOut] | None = None
    warnings: list[str] | None = Field(None, description=WARNINGS_DOC)
