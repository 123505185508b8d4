"""The OpenAI-compatible API through the official `openai` SDK, with strict
response validation, against a real daemon (C1–C5)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Daemon, start_daemon


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = start_daemon(
        tmp_path_factory.mktemp("oa") / "data",
        "--model",
        "tiny.en",
        env={"SONA_SYNC_WAIT_S": "1"},
    )
    yield d
    d.stop()
    if d.proc.stdout:
        d.proc.stdout.close()


@pytest.fixture(scope="module")
def client(daemon: Daemon) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(
        base_url=f"{daemon.url}/v1",
        api_key="unused",
        max_retries=0,
        _strict_response_validation=True,
    )
    yield c
    c.close()


def keywords(manifest: dict[str, Any], name: str = "fox.wav") -> list[str]:
    return manifest[name]["keywords"]


def test_json_default(client: openai.OpenAI, fox_wav: Path, manifest: dict[str, Any]) -> None:
    with fox_wav.open("rb") as f:
        result = client.audio.transcriptions.create(model="whisper-1", file=f)
    assert all(k in result.text.lower() for k in keywords(manifest))


def test_text_srt_vtt(client: openai.OpenAI, fox_wav: Path, manifest: dict[str, Any]) -> None:
    for fmt, check in (
        ("text", lambda s: "fox" in s.lower()),
        ("srt", lambda s: s.startswith("1\n00:00:0")),
        ("vtt", lambda s: s.startswith("WEBVTT")),
    ):
        with fox_wav.open("rb") as f:
            out = client.audio.transcriptions.create(
                model="tiny.en",
                file=f,
                response_format=fmt,  # type: ignore[call-overload]
            )
        assert isinstance(out, str) and check(out), (fmt, out)


def test_verbose_json_words_and_segments(client: openai.OpenAI, fox_wav: Path) -> None:
    with fox_wav.open("rb") as f:
        out = client.audio.transcriptions.create(
            model="whisper-1",
            file=f,
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
            language="en",
            temperature=0.0,
        )
    assert out.language == "en" and out.duration == pytest.approx(7.18, abs=0.3)
    assert out.words and out.segments, "words asked for must never be silently empty"
    assert {"fox", "lazy"} <= {w.word.strip(" .,").lower() for w in out.words}
    assert all(0 <= w.start <= w.end <= out.duration + 0.5 for w in out.words)
    assert out.segments[0].avg_logprob < 0 and out.segments[0].tokens


def test_word_only_granularity_omits_segments(client: openai.OpenAI, fox_wav: Path) -> None:
    with fox_wav.open("rb") as f:
        out = client.audio.transcriptions.create(
            model="whisper-1",
            file=f,
            response_format="verbose_json",
            timestamp_granularities=["word"],
        )
    assert out.words and not out.segments


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the SDK's own warning
def test_translation_endpoint(client: openai.OpenAI, fox_wav: Path) -> None:
    with fox_wav.open("rb") as f:
        out = client.audio.translations.create(model="whisper-1", file=f)
    assert "fox" in out.text.lower()


def test_sse_stream_parsed_by_the_sdk(client: openai.OpenAI, fox_wav: Path) -> None:
    with fox_wav.open("rb") as f:
        stream = client.audio.transcriptions.create(model="whisper-1", file=f, stream=True)
        events = list(stream)
    types = [e.type for e in events]
    assert types[0] == "transcript.text.delta" and types[-1] == "transcript.text.done"
    assert "transcript.text.segment" in types
    deltas = "".join(e.delta for e in events if e.type == "transcript.text.delta")  # type: ignore[union-attr]
    assert deltas.strip() == events[-1].text.strip()  # type: ignore[union-attr]


def test_ndjson_stream_for_sidecars(daemon: Daemon, fox_wav: Path) -> None:
    with (
        fox_wav.open("rb") as f,
        httpx.stream(
            "POST",
            f"{daemon.url}/v1/audio/transcriptions",
            files={"file": ("fox.wav", f, "application/octet-stream")},
            data={"stream": "true"},
            headers={"Accept": "application/x-ndjson"},
            timeout=60,
        ) as r,
    ):
        assert r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in r.iter_lines() if line]
    kinds = [x["type"] for x in lines]
    assert "segment" in kinds and kinds[-1] == "result"
    assert "fox" in lines[-1]["text"].lower() and lines[-1]["segments"]


def test_errors_use_openai_shape(client: openai.OpenAI, tmp_path: Path, fox_wav: Path) -> None:
    page = tmp_path / "x.wav"
    page.write_bytes(b"<!doctype html><html>" * 10)
    with page.open("rb") as f, pytest.raises(openai.APIStatusError) as err:
        client.audio.transcriptions.create(model="whisper-1", file=f)
    assert err.value.status_code == 415
    assert err.value.body["code"] == "unsupported_media"  # type: ignore[index]
    with fox_wav.open("rb") as f, pytest.raises(openai.BadRequestError) as bad:
        client.audio.transcriptions.create(
            model="whisper-1",
            file=f,
            include=["logprobs"],  # type: ignore[list-item]
        )
    assert bad.value.body["param"] == "include[]"  # type: ignore[index]
    with fox_wav.open("rb") as f, pytest.raises(openai.NotFoundError):
        client.audio.transcriptions.create(model="/nonexistent/model", file=f)
    with fox_wav.open("rb") as f, pytest.raises(openai.BadRequestError):
        client.audio.transcriptions.create(
            model="whisper-1",
            file=f,
            response_format="docx",  # type: ignore[arg-type]
        )


def test_unknown_fields_are_ignored(daemon: Daemon, fox_wav: Path) -> None:
    with fox_wav.open("rb") as f:
        r = httpx.post(
            f"{daemon.url}/v1/audio/transcriptions",
            files={"file": ("a", f)},
            data={
                "model": "whisper-1",
                "some_future_field": "x",
                "beam_size": "1",
                "vad_filter": "false",
                "hotwords": "fox",
            },
            timeout=60,
        )
    assert r.status_code == 200 and "fox" in r.json()["text"].lower()


def test_r19_disconnect_mid_stream_frees_the_worker(
    daemon: Daemon, longer_wav: Path, fox_wav: Path
) -> None:
    with (
        longer_wav.open("rb") as f,
        httpx.stream(
            "POST",
            f"{daemon.url}/v1/audio/transcriptions",
            files={"file": ("long.wav", f)},
            data={"stream": "true"},
            headers={"Accept": "application/x-ndjson"},
            timeout=120,
        ) as r,
    ):
        for line in r.iter_lines():
            if line and json.loads(line)["type"] == "segment":
                break  # leave mid-transcription
    closed = time.monotonic()
    jobs = httpx.get(f"{daemon.url}/v1/jobs?limit=1").json()["data"]
    cancelled_job = jobs[0]["id"]
    while True:
        j = httpx.get(f"{daemon.url}/v1/jobs/{cancelled_job}").json()
        if j["status"] == "cancelled":
            break
        assert time.monotonic() - closed < 120, j  # a bound on the wait, not a timing goal
        time.sleep(0.1)
    assert j["progress"] < 1.0
    with fox_wav.open("rb") as f:
        r = httpx.post(
            f"{daemon.url}/v1/audio/transcriptions", files={"file": ("a", f)}, timeout=60
        )
    assert r.status_code == 200


def test_an_interactive_request_overtakes_a_running_long_job(
    daemon: Daemon, client: openai.OpenAI, longer_wav: Path, fox_wav: Path
) -> None:
    """C4: the request's chunks go to the front of the next batch; it does not
    wait for the long job to finish."""
    with longer_wav.open("rb") as f:
        j = httpx.post(f"{daemon.url}/v1/jobs", files={"file": ("l.wav", f)}, timeout=30).json()
    try:
        deadline = time.monotonic() + 60
        while httpx.get(f"{daemon.url}/v1/jobs/{j['id']}").json()["status"] != "processing":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with fox_wav.open("rb") as f:
            text = client.audio.transcriptions.create(model="whisper-1", file=f).text
        assert "fox" in text.lower()
        assert httpx.get(f"{daemon.url}/v1/jobs/{j['id']}").json()["status"] == "processing"
    finally:
        httpx.delete(f"{daemon.url}/v1/jobs/{j['id']}", timeout=30)


@pytest.mark.slow  # a real daemon or model for 10 s or more
def test_saturated_beyond_the_bound_is_429(
    daemon_factory: Any, long_wav: Path, fox_wav: Path
) -> None:
    """With max_jobs_in_flight=1, one urgent job may join the long one; a second
    urgent one finds no room within sync_wait_s and is told to come back."""
    d = daemon_factory(
        "--model", "tiny.en", env={"SONA_SYNC_WAIT_S": "1", "SONA_MAX_JOBS_IN_FLIGHT": "1"}
    )
    url = f"{d.url}/v1/audio/transcriptions"

    def post(path: Path) -> httpx.Response:
        with path.open("rb") as f:
            return httpx.post(url, files={"file": (path.name, f)}, timeout=120)

    with long_wav.open("rb") as f:
        httpx.post(f"{d.url}/v1/jobs", files={"file": ("l.wav", f)}, timeout=30)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(post, long_wav)  # the first urgent job: room for it
        deadline = time.monotonic() + 60
        while len(httpx.get(f"{d.url}/v1/jobs?status=processing").json()["data"]) < 2:
            assert time.monotonic() < deadline and not first.done()
            time.sleep(0.05)
        second = post(fox_wav)
        assert second.status_code == 429, second.text
        assert int(second.headers["Retry-After"]) > 0
        assert first.result().status_code == 200


def test_models_list_and_retrieve_with_the_sdk(client: openai.OpenAI) -> None:
    listed = {m.id: m for m in client.models.list()}
    assert {"tiny.en", "whisper-1"} <= set(listed)
    assert listed["whisper-1"].model_extra["alias_for"] == "tiny.en"  # type: ignore[index]
    assert client.models.retrieve("tiny.en").id == "tiny.en"
    alias = client.models.retrieve("whisper-1")
    assert alias.id == "whisper-1" and alias.object == "model" and alias.owned_by == "sona"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_405_names_exactly_the_allowed_methods(daemon: Daemon) -> None:
    resp = httpx.get(f"{daemon.url}/v1/models/load")
    assert resp.status_code == 405 and resp.headers["Allow"] == "POST"
    resp = httpx.put(f"{daemon.url}/v1/jobs")
    assert resp.status_code == 405 and set(resp.headers["Allow"].split(",")) == {
        "GET",
        "HEAD",
        "POST",
    }
    assert resp.json()["error"]["code"] == "method_not_allowed"
