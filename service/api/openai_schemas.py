"""The OpenAI transcription request's shape (C1): the form both ``api/openai.py``
reads and ``/openapi.json`` shows, apart from the handler so that the two
handler modules need not import each other."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sona.api.schemas import FIELD_NAME_PATTERN
from sona.jobs import Language, TranscribeOptions


class OpenAIForm(BaseModel):
    """The fields of an OpenAI transcription request, plus faster-whisper extras.
    Unknown fields are ignored, as OpenAI's own API does."""

    # Unknown fields are ignored; in a form they are text parts with plain names.
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "additionalProperties": {"type": "string"},
            "propertyNames": {"pattern": FIELD_NAME_PATTERN},
        },
    )

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

    def options(self, task: Literal["transcribe", "translate"]) -> TranscribeOptions:
        return TranscribeOptions(
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
            word_timestamps="word" in self.timestamp_granularities,
        )
