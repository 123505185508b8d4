"""Bad input gets a clear error and loses nothing (F6, F7, RELIABILITY 10–15)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest

from sona.app import create_app
from tests.audio_factory import corrupt_audio, silence_wav, truncated_copy
from tests.helpers import audio_form, idle_app, stalled_upload, submit, wait_done


@pytest.fixture
async def client(aiohttp_client: Any, make_settings: Any) -> Any:
    return await aiohttp_client(create_app(make_settings(max_upload_mb=1, max_audio_seconds=600)))


@pytest.fixture
def decoder_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every file handed to FFmpeg (PyAV's ``av.open``) while the test runs."""
    opened: list[str] = []
    real_open = av.open

    def spy(path: Any, *args: Any, **kw: Any) -> Any:
        opened.append(str(path))
        return real_open(path, *args, **kw)

    monkeypatch.setattr(av, "open", spy)
    return opened


def uploads_dir(make_settings: Any) -> Path:
    return make_settings().data_dir / "uploads"


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.wav", b"RIFF")
    return buf.getvalue()


@pytest.mark.parametrize(
    "payload,status,code",
    [
        (b"", 400, "empty_file"),
        (b"<!doctype html><html><body>hi</body></html>" * 4, 415, "unsupported_media"),
        (_zip(), 415, "unsupported_media"),
        (b"#EXTM3U\n#EXTINF:1,x\n/etc/passwd\n" * 4, 415, "unsupported_media"),
        (b"just some text that claims to be audio" * 10, 415, "unsupported_media"),
    ],
    ids=["empty", "html", "zip", "playlist", "text"],
)
async def test_r11_non_audio_is_refused_and_nothing_kept(
    client: Any,
    make_settings: Any,
    decoder_opens: list[str],
    payload: bytes,
    status: int,
    code: str,
) -> None:
    resp = await client.post("/v1/jobs", data=audio_form(data=payload))
    body = await resp.json()
    assert resp.status == status, body
    assert body["error"]["code"] == code and body["error"]["message"]
    assert list(uploads_dir(make_settings).iterdir()) == []
    assert decoder_opens == []  # refused by its first bytes: FFmpeg never parsed it


async def test_r11_the_decoder_spy_sees_real_audio(
    client: Any, decoder_opens: list[str], fox_wav: Path
) -> None:
    """The spy above can fail: a real upload does reach the decoder (probed at submit)."""
    await submit(client, fox_wav)
    assert decoder_opens


async def test_r10_oversize_upload_is_413_and_removed(client: Any, make_settings: Any) -> None:
    big = b"RIFF\x00\x00\x00\x00WAVE" + b"\x00" * (3 * 1024 * 1024)  # declared: refused early
    resp = await client.post("/v1/jobs", data=audio_form(data=big))
    assert resp.status == 413 and (await resp.json())["error"]["code"] == "file_too_large"
    assert list(uploads_dir(make_settings).iterdir()) == []


async def test_r10_oversize_chunked_upload_without_length(client: Any, make_settings: Any) -> None:
    async def body():  # type: ignore[no-untyped-def]
        yield b"RIFF\x00\x00\x00\x00WAVE"
        for _ in range(40):
            yield b"\x00" * 65536

    form = aiohttp.FormData()
    form.add_field("file", body(), filename="big.wav", content_type="audio/wav")
    resp = await client.post("/v1/jobs", data=form)
    assert resp.status == 413
    assert list(uploads_dir(make_settings).iterdir()) == []


async def test_r15_corrupt_audio_is_refused_at_submit(
    client: Any, tmp_path: Path, fox_wav: Path
) -> None:
    bad = corrupt_audio(tmp_path / "bad.wav")
    resp = await client.post("/v1/jobs", data=audio_form(bad))
    body = await resp.json()
    # The header probe at submit already finds no audio stream: refused, no job.
    assert resp.status == 400 and body["error"]["code"] == "invalid_audio", body
    assert (await (await client.get("/v1/jobs")).json())["data"] == []
    # The worker is alive.
    ok = await wait_done(client, (await submit(client, fox_wav))["id"])
    assert ok["status"] == "completed"


async def test_r15_truncated_audio_completes_with_a_warning(
    client: Any, tmp_path: Path, fox_wav: Path
) -> None:
    cut = truncated_copy(fox_wav, tmp_path / "cut.wav")
    resp = await client.post("/v1/jobs", data=audio_form(cut))
    assert resp.status == 202, await resp.text()
    body = await wait_done(client, (await resp.json())["id"])
    # Half the file decodes: completed, with what was heard and a warning.
    assert body["status"] == "completed" and body["warnings"] == ["audio_truncated"], body
    assert (await wait_done(client, (await submit(client, fox_wav))["id"]))["status"] == "completed"


async def test_too_long_audio_is_422(client: Any, tmp_path: Path) -> None:
    long = silence_wav(tmp_path / "long.wav", 700)  # limit is 600 s here
    resp = await client.post("/v1/jobs", data=audio_form(long))
    # 700 s of 16 kHz WAV is ~22 MB: the 1 MB upload limit answers first.
    assert resp.status in (413, 422)


async def test_r14_duration_limit_from_header(
    aiohttp_client: Any, make_settings: Any, tmp_path: Path
) -> None:
    client = await aiohttp_client(create_app(make_settings(max_audio_seconds=5)))
    wav = silence_wav(tmp_path / "s.wav", 8)
    resp = await client.post("/v1/jobs", data=audio_form(wav))
    body = await resp.json()
    assert resp.status == 422 and body["error"]["code"] == "audio_too_long"


async def test_r31_sequential_mode_is_refused_past_its_limit_at_submit(
    aiohttp_client: Any, make_settings: Any, tmp_path: Path
) -> None:
    """condition_on_previous_text decodes the whole file in memory: past
    max_sequential_seconds (by the header) it is 422, saying what to do."""
    client = await idle_app(aiohttp_client, make_settings, max_sequential_seconds=5)
    wav = silence_wav(tmp_path / "s.wav", 8)
    form = audio_form(wav, condition_on_previous_text="true")
    resp = await client.post("/v1/jobs", data=form)
    error = (await resp.json())["error"]
    assert resp.status == 422 and error["code"] == "audio_too_long", error
    assert error["param"] == "condition_on_previous_text"
    assert "max_sequential_seconds" in error["message"] and "without it" in error["message"]
    form = audio_form(wav, condition_on_previous_text="true")
    resp = await client.post("/v1/audio/transcriptions", data=form)
    assert resp.status == 422 and (await resp.json())["error"]["code"] == "audio_too_long"
    # The same file in the default (batched, streaming) mode is accepted.
    assert (await client.post("/v1/jobs", data=audio_form(wav))).status == 202


# NUL in a name is covered in test_uploads: aiohttp's client refuses to send it.
@pytest.mark.parametrize("name", ["../../etc/passwd", "..\\..\\x.wav", "x" * 4096])
async def test_r12_hostile_file_names_stay_inside_the_data_dir(
    client: Any, make_settings: Any, fox_wav: Path, name: str
) -> None:
    resp = await client.post("/v1/jobs", data=audio_form(fox_wav, filename=name))
    assert resp.status == 202, await resp.text()
    job = await resp.json()
    assert "/" not in job["file_name"] and "\\" not in job["file_name"]
    assert "\x00" not in job["file_name"] and len(job["file_name"]) <= 255
    stored = list(uploads_dir(make_settings).iterdir())
    assert len(stored) == 1 and stored[0].name.isalnum()


@pytest.mark.parametrize(
    "fields,param",
    [
        ({"job_id": "../x"}, "job_id"),
        ({"job_id": "a" * 65}, "job_id"),
        ({"language": "english!"}, "language"),
        ({"task": "summarise"}, "task"),
        ({"metadata": "[1,2]"}, "metadata"),
        ({"metadata": "{not json"}, "metadata"),
        ({"metadata": '{"x": "' + "y" * 5000 + '"}'}, "metadata"),
        ({"metadata": '{"live_session": "sess_1"}'}, "metadata"),  # Sona's own key
        ({"priority": "high"}, "priority"),
        ({"bogus": "1"}, "bogus"),
        ({"model": "no-such-model"}, "model"),
    ],
)
async def test_bad_fields_are_400_naming_the_field(
    client: Any, make_settings: Any, fox_wav: Path, fields: dict[str, str], param: str
) -> None:
    resp = await client.post("/v1/jobs", data=audio_form(fox_wav, **fields))
    body = await resp.json()
    assert resp.status in (400, 404), body
    assert body["error"]["param"] == param, body
    assert list(uploads_dir(make_settings).iterdir()) == []


async def test_missing_file_and_wrong_content_type(client: Any) -> None:
    form = aiohttp.FormData()
    form.add_field("model", "tiny.en")
    form.add_field("other", b"x", filename="x.bin")
    resp = await client.post("/v1/jobs", data=form)
    assert resp.status == 400 and (await resp.json())["error"]["param"] == "file"
    resp = await client.post("/v1/jobs", data=b"raw", headers={"Content-Type": "audio/wav"})
    assert resp.status == 400
    resp = await client.post(
        "/v1/jobs", data=b"--x\r\ngarbage", headers={"Content-Type": "multipart/form-data"}
    )
    assert resp.status == 400


def _multipart(boundary: str, parts: list[tuple[str, bytes]], preamble: bytes = b"") -> bytes:
    out = preamble
    for headers, body in parts:
        out += f"--{boundary}\r\n{headers}\r\n\r\n".encode() + body + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


@pytest.mark.parametrize(
    "body,codes",
    [
        # 10k tiny parts: refused at the part limit, long before the end.
        (_multipart("b", [('Content-Disposition: form-data; name="x"', b"1")] * 10_000), {400}),
        # A preamble that never reaches a boundary.
        (b"x" * 200_000, {400}),
        # A part header line of 200 KB.
        (
            _multipart(
                "b", [('Content-Disposition: form-data; name="' + "n" * 200_000 + '"', b"")]
            ),
            {400, 413},
        ),
    ],
    ids=["10k-parts", "endless-preamble", "huge-part-header"],
)
async def test_r13_malformed_multipart_is_refused_quickly(
    client: Any, make_settings: Any, body: bytes, codes: set[int]
) -> None:
    resp = await client.post(
        "/v1/jobs", data=body, headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert resp.status in codes, await resp.text()
    assert (await resp.json())["error"]["code"]
    assert list(uploads_dir(make_settings).iterdir()) == []
    assert (await client.get("/health")).status == 200  # others still served


async def test_r19_disconnect_mid_upload_leaves_no_partial_file(
    client: Any, make_settings: Any
) -> None:
    import asyncio

    writer = await stalled_upload(client.server.host, client.server.port)
    uploads = uploads_dir(make_settings)
    for _ in range(100):  # the partial file exists while the upload streams
        if any(uploads.iterdir()):
            break
        await asyncio.sleep(0.02)
    assert any(uploads.iterdir())
    writer.close()  # the client goes away mid-upload
    await writer.wait_closed()
    for _ in range(100):
        if not any(uploads.iterdir()):
            break
        await asyncio.sleep(0.05)
    assert list(uploads.iterdir()) == []
