"""Error messages name no server paths (F7): library errors such as FFmpeg's
end with the file they were reading."""

from __future__ import annotations

from typing import Any

import pytest

from sona.api.errors import public_message
from tests.helpers import audio_form, idle_app


@pytest.mark.parametrize(
    "raw,shown",
    [
        ("could not read '/srv/sona/data/uploads/d8f6a1'", "could not read '<path>'"),
        ("model /opt/models/tiny did not load", "model <path> did not load"),
        (
            "fetching https://example.org/a/b.mp3 failed",
            "fetching https://example.org/a/b.mp3 failed",
        ),
        ("a/b stays", "a/b stays"),
    ],
)
def test_public_message_hides_absolute_paths_only(raw: str, shown: str) -> None:
    assert public_message(raw) == shown


async def test_invalid_audio_message_names_no_server_path(
    aiohttp_client: Any, make_settings: Any
) -> None:
    client = await idle_app(aiohttp_client, make_settings)
    broken = b"RIFF\xff\xff\xff\x7fWAVEfmt " + b"\x13\x37" * 400  # a WAV header, then junk
    resp = await client.post("/v1/jobs", data=audio_form(data=broken))
    body = await resp.json()
    assert resp.status == 400 and body["error"]["code"] == "invalid_audio", body
    message = body["error"]["message"]
    data_dir = str(make_settings().data_dir)
    assert data_dir not in message and "/uploads/" not in message, message
