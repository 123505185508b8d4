"""schemathesis hooks for tests/test_schemathesis.py (loaded through
SCHEMATHESIS_HOOKS). They keep the run on this machine and quick:

* a generated ``file`` part becomes a real 0.2 s WAV: a schema cannot say
  "audio", and random bytes only ever meet the 415 path; a short silent clip
  exercises the accepting path and the real model finishes it at once;
* ``callback_url`` is dropped and JSON ``{"url": ...}`` submissions are
  filtered out: either would make the daemon connect to generated addresses,
  and tests never leave loopback (tests/test_fetch.py covers those rules);
* a ``language`` other than ``en`` becomes ``en``: the run's model is tiny.en,
  English-only, and a valid code it cannot do is a documented 400
  (``unsupported_language``) that depends on the model, which no schema can
  say (tests/test_error_messages.py covers it)."""

from __future__ import annotations

import io
import wave
from typing import Any

import schemathesis


def _wav(seconds: float = 0.2) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(b"\x00\x00" * int(16_000 * seconds))
    return buf.getvalue()


WAV = _wav()


UPLOADS = {
    "/v1/jobs",
    "/transcribe",
    "/v1/audio/transcriptions",
    "/v1/audio/translations",
    "/v1/audio/language",
}


@schemathesis.hook
def filter_case(ctx: Any, case: Any) -> bool:
    if case.path == "/v1/jobs" and case.media_type == "application/json":
        return False
    # Multipart fields all arrive as text: a "negative" number where the schema
    # says string (prompt=123) is valid text. Those forms' refusals are tested
    # in tests/test_api_inputs.py.
    negative = getattr(case.meta, "generation", None) and case.meta.generation.mode.is_negative
    return not (case.method.upper() == "POST" and case.path in UPLOADS and negative)


@schemathesis.hook
def map_case(ctx: Any, case: Any) -> Any:
    if isinstance(case.body, dict):
        case.body.pop("callback_url", None)
        if isinstance(case.body.get("file"), (bytes, str)):
            case.body["file"] = WAV
        if case.path in UPLOADS and case.body.get("language") not in (None, "en"):
            case.body["language"] = "en"
    return case
