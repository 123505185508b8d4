"""The OpenAI-style requests' shapes (C1): the transcription form both
``api/openai.py`` reads and ``/openapi.json`` shows, and the language
detection's form and answer (``api/language.py``), apart from the handlers so
that no handler module imports another."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sona.api.schemas import FIELD_NAME_PATTERN, parse
from sona.jobs import DecodeChoices, TranscribeOptions

# Unknown fields are ignored, as OpenAI's own API does; in a form they are text
# parts with plain names.
FORM_CONFIG = ConfigDict(
    extra="ignore",
    json_schema_extra={
        "additionalProperties": {"type": "string"},
        "propertyNames": {"pattern": FIELD_NAME_PATTERN},
    },
)


class OpenAIForm(DecodeChoices):
    """The fields of an OpenAI transcription request, plus faster-whisper
    extras and Sona's (the same fields and bounds as POST /v1/jobs).
    Unknown fields are ignored, as OpenAI's own API does."""

    model_config = FORM_CONFIG

    response_format: Literal["json", "text", "srt", "verbose_json", "vtt"] = "json"
    timestamp_granularities: list[Literal["word", "segment"]] = Field(
        default=["segment"], alias="timestamp_granularities[]"
    )
    stream: bool = False

    def options(self, task: Literal["transcribe", "translate"]) -> TranscribeOptions:
        """The job's options (validated again as the job's own)."""
        choices = self.model_dump(include=set(DecodeChoices.model_fields))
        return parse(
            TranscribeOptions,
            {
                **choices,
                "task": task,
                # Subtitle cues are cut well only at word times (docs/api.md).
                "word_timestamps": "word" in self.timestamp_granularities
                or self.response_format in ("srt", "vtt"),
            },
        )


class LanguageForm(BaseModel):
    """Form fields of POST /v1/audio/language besides `file`."""

    model_config = FORM_CONFIG

    model: str | None = None


class LanguageScore(BaseModel):
    language: str
    probability: float


class LanguageOut(BaseModel):
    """The detected language (an ISO-639-1 code) with the model's probability,
    and the likeliest few. An English-only model answers `en` with 1.0; audio
    without speech has no language (null, and no candidates)."""

    language: str | None
    language_probability: float | None
    languages: list[LanguageScore]
    model: str
