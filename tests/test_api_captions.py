"""Captions end to end on the real tiny.en model: SRT and WebVTT cues keep to
the line width, line count and duration asked for — at submission (stored
with the job), per download, and on the OpenAI endpoint — and lose no word."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from sona.app import create_app
from tests.helpers import audio_form, submit, wait_done

CUE = re.compile(
    r"(?:\d+\n)?(\d{2,}):(\d\d):(\d\d)[,.](\d{3}) --> (\d{2,}):(\d\d):(\d\d)[,.](\d{3})\n"
    r"((?:.+\n)+)\n"
)


def parse_cues(body: str) -> list[tuple[float, float, list[str]]]:
    body = body.removeprefix("WEBVTT\n\n")
    found = [
        (_secs(m.groups()[0:4]), _secs(m.groups()[4:8]), m.group(9).splitlines())
        for m in CUE.finditer(body)
    ]
    assert CUE.sub("", body) == "", "every block is a well-formed cue"
    return found


def _secs(parts: tuple[str | Any, ...]) -> float:
    h, m, s, ms = (int(p) for p in parts)
    return h * 3600 + m * 60 + s + ms / 1000


def words(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", "", text.lower()).split()


def check(cues: list[tuple[float, float, list[str]]], width: int, count: int, secs: float) -> None:
    assert cues
    for start, end, lines in cues:
        assert 1 <= len(lines) <= count, lines
        assert all(len(line) <= width for line in lines), lines
        assert 0 <= end - start <= secs + 0.001, (start, end, lines)


async def start(aiohttp_client: Any, make_settings: Any) -> TestClient:
    return await aiohttp_client(create_app(make_settings()))


async def test_a_long_job_s_srt_keeps_to_the_layout_it_was_submitted_with(
    aiohttp_client: Any, make_settings: Any, long_wav: Path
) -> None:
    client = await start(aiohttp_client, make_settings)
    job = await submit(client, long_wav, max_line_width="32", max_cue_duration="4")
    # Asking for a caption layout turns word timestamps on: cues are cut at words.
    assert job["options"]["max_line_width"] == 32 and job["options"]["word_timestamps"]
    done = await wait_done(client, job["id"], timeout=600)
    assert done["status"] == "completed", done
    url = f"/v1/jobs/{job['id']}/transcript"
    srt = parse_cues(await (await client.get(url, params={"format": "srt"})).text())
    check(srt, width=32, count=2, secs=4.0)
    segments = (await (await client.get(url, params={"format": "verbose_json"})).json())["segments"]
    assert len(srt) > len(segments)  # cues are cut finer than segments
    assert words(" ".join(" ".join(lines) for *_, lines in srt)) == words(done["text"])
    # A download may lay the same transcript out otherwise.
    query = {"format": "vtt", "max_line_width": "20", "max_line_count": "1"}
    vtt = parse_cues(
        await (await client.get(url, params={**query, "max_cue_duration": "2.5"})).text()
    )
    check(vtt, width=20, count=1, secs=2.5)
    assert words(" ".join(" ".join(lines) for *_, lines in vtt)) == words(done["text"])


async def test_default_captions_and_bad_layout_values(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    client = await start(aiohttp_client, make_settings)
    job = await submit(client, fox_wav)  # no words asked for: cues split the text
    assert not job["options"]["word_timestamps"]
    done = await wait_done(client, job["id"])
    url = f"/v1/jobs/{job['id']}/transcript"
    cues = parse_cues(await (await client.get(url, params={"format": "srt"})).text())
    check(cues, width=42, count=2, secs=7.0)
    assert words(" ".join(" ".join(lines) for *_, lines in cues)) == words(done["text"])
    for name, value in [
        ("max_line_width", "5"),
        ("max_line_width", "wide"),
        ("max_line_count", "0"),
        ("max_cue_duration", "0.2"),
        ("max_cue_duration", "600"),
    ]:
        resp = await client.get(url, params={"format": "srt", name: value})
        assert resp.status == 400, (name, value)
        assert (await resp.json())["error"]["param"] == name
        resp = await client.post("/v1/jobs", data=audio_form(fox_wav, **{name: value}))
        assert resp.status == 400 and (await resp.json())["error"]["param"] == name


async def test_openai_srt_and_vtt_take_the_layout(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    client = await start(aiohttp_client, make_settings)
    for fmt in ("srt", "vtt"):
        form = audio_form(fox_wav, response_format=fmt, max_line_width="24", max_cue_duration="3")
        resp = await client.post("/v1/audio/transcriptions", data=form)
        assert resp.status == 200, await resp.text()
        cues = parse_cues(await resp.text())
        check(cues, width=24, count=2, secs=3.0)
        assert "fox" in words(" ".join(" ".join(lines) for *_, lines in cues))
    form = audio_form(fox_wav, response_format="srt", max_line_count="11")
    resp = await client.post("/v1/audio/transcriptions", data=form)
    assert resp.status == 400 and (await resp.json())["error"]["param"] == "max_line_count"
