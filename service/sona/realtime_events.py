"""The OpenAI Realtime transcription protocol's shapes, as the ``openai`` SDK
types them (``openai.types.realtime``): a session's configuration read from a
``session.update``, and the server events built as plain dicts. Pure: no I/O,
no aiohttp; ``sona/live.py`` and ``api/realtime.py`` use it, and the tests
validate every event built here against the SDK's own pydantic models."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any

from sona.errors import InvalidRequest

RATES = (24_000, 16_000)  # 24 kHz as OpenAI's; 16 kHz spares the resampling


class UnsupportedFormat(InvalidRequest):
    code = "unsupported_audio_format"


@dataclass(frozen=True)
class ServerVad:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500


@dataclass(frozen=True)
class SessionConfig:
    """What a transcription session runs with. ``model`` is the name asked for
    (an OpenAI name means the default model); ``turn_detection`` None: the
    client commits each turn itself."""

    model: str | None = None
    language: str | None = None
    prompt: str | None = None
    rate: int = 24_000
    turn_detection: ServerVad | None = ServerVad()


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def _get(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], param: str) -> Any:
    value = obj.get(key)
    if value is not None and not isinstance(value, kind):
        raise InvalidRequest(f"{param} has the wrong type", param=param)
    return value


def updated(config: SessionConfig, session: Any) -> SessionConfig:
    """``config`` with what a ``session.update``'s ``session`` changes; fields it
    leaves out stay, ``turn_detection: null`` turns server VAD off."""
    if not isinstance(session, dict):
        raise InvalidRequest("session must be an object", param="session")
    kind = session.get("type", "transcription")
    if kind != "transcription":
        raise InvalidRequest(
            f"session.type {kind!r}: Sona serves transcription sessions only "
            "(connect with ?intent=transcription)",
            param="session.type",
        )
    audio = _get(session, "audio", dict, "session.audio") or {}
    inp = _get(audio, "input", dict, "session.audio.input") or {}
    changes: dict[str, Any] = {}
    if (fmt := _get(inp, "format", dict, "session.audio.input.format")) is not None:
        changes["rate"] = _rate(fmt)
    if "transcription" in inp:
        tr = _get(inp, "transcription", dict, "session.audio.input.transcription") or {}
        for key in ("model", "language", "prompt"):
            changes[key] = _get(tr, key, str, f"session.audio.input.transcription.{key}")
    if "turn_detection" in inp:
        changes["turn_detection"] = _turn_detection(inp["turn_detection"])
    return replace(config, **changes)


def _rate(fmt: dict[str, Any]) -> int:
    kind, rate = fmt.get("type", "audio/pcm"), fmt.get("rate", 24_000)
    if kind != "audio/pcm" or rate not in RATES:
        raise UnsupportedFormat(
            f"input audio format {kind} at {rate} Hz: Sona takes audio/pcm (16-bit "
            "little-endian mono) at 24000 Hz, or 16000 Hz",
            param="session.audio.input.format",
        )
    return int(rate)


def _turn_detection(td: Any) -> ServerVad | None:
    if td is None:
        return None
    param = "session.audio.input.turn_detection"
    if not isinstance(td, dict) or td.get("type") != "server_vad":
        raise InvalidRequest("turn_detection: only server_vad, or null", param=param)
    vad = ServerVad()
    threshold = _get(td, "threshold", (int, float), f"{param}.threshold")
    padding = _get(td, "prefix_padding_ms", int, f"{param}.prefix_padding_ms")
    silence = _get(td, "silence_duration_ms", int, f"{param}.silence_duration_ms")
    if threshold is not None and not 0 <= threshold <= 1:
        raise InvalidRequest("threshold is between 0 and 1", param=f"{param}.threshold")
    return ServerVad(
        threshold=vad.threshold if threshold is None else float(threshold),
        prefix_padding_ms=vad.prefix_padding_ms if padding is None else max(0, padding),
        silence_duration_ms=vad.silence_duration_ms if silence is None else max(100, silence),
    )


def session_shape(session_id: str, config: SessionConfig, job_id: str | None) -> dict[str, Any]:
    """A ``RealtimeTranscriptionSessionCreateRequest``, with Sona's ``id`` (the
    session to resume) and ``job_id`` (where it is recorded) beside it."""
    td = config.turn_detection
    return {
        "type": "transcription",
        "id": session_id,
        "job_id": job_id,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": config.rate},
                "noise_reduction": None,
                "transcription": {
                    "model": config.model,
                    "language": config.language,
                    "prompt": config.prompt,
                },
                "turn_detection": None
                if td is None
                else {
                    "type": "server_vad",
                    "threshold": td.threshold,
                    "prefix_padding_ms": td.prefix_padding_ms,
                    "silence_duration_ms": td.silence_duration_ms,
                },
            }
        },
    }


def event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": new_id("event"), **fields}


def error(code: str, message: str, *, param: str | None = None, about: str | None = None) -> Any:
    """An ``error`` event; ``about``: the client event's id it answers."""
    kind = "server_error" if code in ("internal_error", "engine_error") else "invalid_request_error"
    return event(
        "error",
        error={"type": kind, "code": code, "message": message, "param": param, "event_id": about},
    )


def completed(item_id: str, transcript: str, seconds: float) -> dict[str, Any]:
    return event(
        "conversation.item.input_audio_transcription.completed",
        item_id=item_id,
        content_index=0,
        transcript=transcript,
        usage={"type": "duration", "seconds": round(seconds, 3)},
    )


def failed(item_id: str, code: str, message: str) -> dict[str, Any]:
    return event(
        "conversation.item.input_audio_transcription.failed",
        item_id=item_id,
        content_index=0,
        error={"type": "server_error", "code": code, "message": message},
    )
