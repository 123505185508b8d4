"""The OpenAI-style requests' shapes (C1): the transcription form both
``api/openai.py`` reads and ``/openapi.json`` shows, and the language
detection's form and answer (``api/language.py``), apart from the handlers so
that no handler module imports another."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sona.api.schemas import FIELD_NAME_PATTERN, parse
from sona.jobs import (
    Language,
    MaxCueDuration,
    MaxLineCount,
    MaxLineWidth,
    MinSilenceMs,
    SpeechPadMs,
    TranscribeOptions,
    VadThreshold,
)

# Unknown fields are ignored, as OpenAI's own API does; in a form they are text
# parts with plain names.
FORM_CONFIG = ConfigDict(
    extra="ignore",
    json_schema_extra={
        "additionalProperties": {"type": "string"},
        "propertyNames": {"pattern": FIELD_NAME_PATTERN},
    },
)


class OpenAIForm(BaseModel):
    """The fields of an OpenAI transcription request, plus faster-whisper extras.
    Unknown fields are ignored, as OpenAI's own API does."""

    model_config = FORM_CONFIG

    model: str | None = None
    language: Language = None
    prompt: str | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)
    response_format: Literal["json", "text", "srt", "verbose_json", "vtt"] = "json"
    timestamp_granularities: list[Literal["word", "segment"]] = Field(
        default=["segment"], alias="timestamp_granularities[]"
    )
    stream: bool = False
    beam_size: int | None = Field(default=None, ge=1, le=10)
    vad_filter: bool | None = None
    hotwords: str | None = None
    diarize: Literal["none", "channels"] = "none"
    condition_on_previous_text: bool = False
    # Sona's extras, as on POST /v1/jobs, with the same bounds (jobs.py).
    vad_threshold: VadThreshold = None
    min_silence_duration_ms: MinSilenceMs = None
    speech_pad_ms: SpeechPadMs = None
    max_line_width: MaxLineWidth = None
    max_line_count: MaxLineCount = None
    max_cue_duration: MaxCueDuration = None

    def options(self, task: Literal["transcribe", "translate"]) -> TranscribeOptions:
        """The job's options (validated again as the job's own)."""
        return parse(
            TranscribeOptions,
            dict(
                model=self.model,
                language=self.language,
                prompt=self.prompt,
                temperature=self.temperature,
                task=task,
                beam_size=self.beam_size,
                vad_filter=self.vad_filter,
                hotwords=self.hotwords,
                diarize=self.diarize,
                condition_on_previous_text=self.condition_on_previous_text,
                # Subtitle cues are cut well only at word times (docs/api.md).
                word_timestamps="word" in self.timestamp_granularities
                or self.response_format in ("srt", "vtt"),
                vad_threshold=self.vad_threshold,
                min_silence_duration_ms=self.min_silence_duration_ms,
                speech_pad_ms=self.speech_pad_ms,
                max_line_width=self.max_line_width,
                max_line_count=self.max_line_count,
                max_cue_duration=self.max_cue_duration,
            ),
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
