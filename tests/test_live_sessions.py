"""Live sessions recorded as jobs, against a running daemon: the job holds the
turns and the audio and ends completed; a dropped client resumes without a
turn lost or repeated; the engine's death, the daemon's death and SIGTERM
lose nothing that was said. The socket is driven raw (aiohttp), so a test can
drop it without a close frame."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import time
import wave
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from standardwebhooks import Webhook

from tests.conftest import AUDIO, Daemon
from tests.test_realtime import pcm24k, word_error
from tests.test_webhooks import SECRET

FRAME = 4800  # bytes: 100 ms at 24 kHz, 16-bit


class Live:
    """One client socket of a session, and what it received."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http, self.ws = http, ws
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, daemon: Daemon, session_id: str | None = None, **params: str) -> Live:
        """``params``: Sona's own query parameters (``refine_model``, ``callback_url``)."""
        live = await cls.connect(daemon, session_id, **params)
        await live.next("session.created")
        return live

    @classmethod
    async def connect(cls, daemon: Daemon, session_id: str | None = None, **params: str) -> Live:
        http = aiohttp.ClientSession()
        query = {"session_id": session_id} if session_id else {"intent": "transcription"}
        url = f"ws://127.0.0.1:{daemon.port}/v1/realtime"
        ws = await http.ws_connect(url, params={**query, **params})
        return cls(http, ws)

    @property
    def session(self) -> dict[str, Any]:
        return next(e for e in self.events if e["type"] == "session.created")["session"]

    async def send(self, kind: str, **fields: Any) -> None:
        await self.ws.send_str(json.dumps({"type": kind, **fields}))

    async def manual(self) -> None:
        """Turn detection off: the client commits."""
        session = {"type": "transcription", "audio": {"input": {"turn_detection": None}}}
        await self.send("session.update", session=session)
        await self.next("session.updated")

    async def audio(self, pcm: bytes) -> None:
        for at in range(0, len(pcm), FRAME):
            chunk = base64.b64encode(pcm[at : at + FRAME]).decode()
            await self.send("input_audio_buffer.append", audio=chunk)

    async def next(self, kind: str, timeout: float = 120) -> dict[str, Any]:
        """The next event of ``kind`` (those before it are kept too)."""
        deadline = time.monotonic() + timeout
        while True:
            msg = await self.ws.receive(timeout=max(0.1, deadline - time.monotonic()))
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"socket ended ({msg.type}, {msg.data}) waiting for {kind}")
            event = json.loads(msg.data)
            self.events.append(event)
            if event["type"] == kind:
                return event

    def texts(self) -> list[str]:
        return [e["transcript"] for e in self.events if e["type"].endswith("completed")]

    async def close(self) -> None:
        await self.ws.close()
        await self.http.close()

    async def drop(self) -> None:
        """Gone without a close frame, as when a network breaks."""
        transport = self.ws._response.connection.transport  # type: ignore[union-attr]
        assert transport is not None
        transport.abort()
        await self.http.close()


def clip(name: str) -> bytes:
    return pcm24k(AUDIO / name)


def get(daemon: Daemon, path: str) -> httpx.Response:
    """The daemon is another process: a blocking request stalls only this test."""
    return httpx.get(f"{daemon.url}{path}")


def job_of(daemon: Daemon, job_id: str) -> dict[str, Any]:
    return get(daemon, f"/v1/jobs/{job_id}").json()


def wait_status(daemon: Daemon, job_id: str, status: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = job_of(daemon, job_id)
        if job["status"] == status:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} is {job['status']}, not {status}")


def transcript(daemon: Daemon, job_id: str, fmt: str = "text") -> str:
    r = httpx.get(f"{daemon.url}/v1/jobs/{job_id}/transcript", params={"format": fmt})
    assert r.status_code == 200, r.text
    return r.text


async def test_a_session_is_a_job_that_ends_completed(daemon_factory: Any, tmp_path: Path) -> None:
    d = daemon_factory("--model", "tiny.en")
    live = await Live.open(d)
    job_id = live.session["job_id"]
    assert job_of(d, job_id)["status"] == "processing"
    listed = get(d, "/v1/jobs").json()["data"]
    assert job_id in [j["id"] for j in listed]
    await live.manual()
    for name in ("fox.wav", "report.wav"):
        await live.audio(clip(name))
        await live.send("input_audio_buffer.commit")
        await live.next("conversation.item.input_audio_transcription.completed")
    await live.close()
    job = wait_status(d, job_id, "completed")
    assert job["duration"] == pytest.approx(7.177 + 4.233, abs=0.1)
    said = " ".join(live.texts())
    assert word_error(said, transcript(d, job_id)) == 0
    srt = transcript(d, job_id, "srt")
    assert "fox" in srt.lower() and "quarterly" in srt.lower() and "00:00:07" in srt
    for fmt in ("json", "verbose_json", "vtt", "tsv"):
        transcript(d, job_id, fmt)
    audio = get(d, f"/v1/jobs/{job_id}/audio")
    path = tmp_path / "rec.wav"
    path.write_bytes(audio.content)
    with wave.open(str(path)) as w:
        assert w.getframerate() == 16_000
        assert w.getnframes() / 16_000 == pytest.approx(11.41, abs=0.1)


async def test_a_dropped_client_resumes_without_losing_or_repeating_a_turn(
    daemon_factory: Any,
) -> None:
    d = daemon_factory("--model", "tiny.en")
    first = await Live.open(d)
    session_id, job_id = first.session["id"], first.session["job_id"]
    await first.manual()
    await first.audio(clip("fox.wav"))
    await first.send("input_audio_buffer.commit")
    await first.next("input_audio_buffer.committed")
    half = clip("report.wav")[: FRAME * 20]  # 2 s of the next turn, uncommitted
    await first.audio(half)
    await asyncio.sleep(0.5)  # fox's turn decoded meanwhile (about 0.2 s idle): written
    await first.drop()  # to the socket or held, it was never read by this client

    # The last event this client read: what was written after it is sent again.
    second = await Live.open(d, session_id, last_event_id=first.events[-1]["event_id"])
    received_ms = second.events[0]["audio_received_ms"]
    assert received_ms == pytest.approx(7177 + 2000, abs=60)
    assert second.session["job_id"] == job_id
    spoken = clip("fox.wav") + clip("report.wav")
    await second.audio(spoken[received_ms * 48 :])  # 48 bytes a millisecond
    await second.send("input_audio_buffer.commit")
    while len(first.texts()) + len(second.texts()) < 2:
        await second.next("conversation.item.input_audio_transcription.completed")
    await second.close()
    texts = first.texts() + second.texts()
    assert len(texts) == 2 and "fox" in texts[0].lower() and "quarterly" in texts[1].lower()
    completed = [e for e in second.events if e["type"].endswith("transcription.completed")]
    assert len({e["event_id"] for e in completed}) == len(completed)  # none sent twice
    wait_status(d, job_id, "completed")
    stored = transcript(d, job_id)
    assert stored.lower().count("fox") == 1 and stored.lower().count("quarterly") == 1


async def test_the_engine_killed_mid_session_costs_no_turn(daemon_factory: Any) -> None:
    d = daemon_factory("--model", "tiny.en")
    live = await Live.open(d)
    await live.manual()
    await live.audio(clip("weather.wav"))
    engine = get(d, "/ready").json()["engine"]["pid"]
    os.kill(engine, signal.SIGKILL)
    await live.send("input_audio_buffer.commit")
    done = await live.next("conversation.item.input_audio_transcription.completed")
    assert "weather" in done["transcript"].lower()
    assert get(d, "/ready").json()["engine"]["restarts"] >= 1
    await live.close()


async def test_sigterm_ends_sessions_with_their_jobs_completed(daemon_factory: Any) -> None:
    d = daemon_factory("--model", "tiny.en")
    live = await Live.open(d)
    job_id = live.session["job_id"]
    await live.manual()
    await live.audio(clip("numbers.wav"))
    await live.send("input_audio_buffer.commit")
    await live.next("input_audio_buffer.committed")
    d.proc.send_signal(signal.SIGTERM)
    done = await live.next("conversation.item.input_audio_transcription.completed")
    closing = await live.ws.receive(timeout=30)
    assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1001
    await live.http.close()
    assert d.proc.wait(60) == 0
    restarted = daemon_factory("--model", "tiny.en", data_dir=d.data_dir)
    job = job_of(restarted, job_id)
    assert job["status"] == "completed"
    assert word_error(done["transcript"], transcript(restarted, job_id)) == 0


async def killed_after_a_turn_and_a_tail(
    d: Any, live: Live, daemon_factory: Any
) -> tuple[dict[str, Any], Any]:
    """fox.wav committed and its turn stored, report.wav sent and never
    committed (all of it in the recording), then ``kill -9`` and a new daemon
    on the same data: the turn's ``completed`` event and the new daemon."""
    await live.manual()
    await live.audio(clip("fox.wav"))
    await live.send("input_audio_buffer.commit")
    done = await live.next("conversation.item.input_audio_transcription.completed")
    await live.audio(clip("report.wav"))  # never committed
    [recording] = (d.data_dir / "uploads").iterdir()
    received = 44 + int((7.177 + 4.233 - 0.05) * 16_000) * 2
    deadline = time.monotonic() + 30
    while recording.stat().st_size < received:  # all of it written before the kill
        assert time.monotonic() < deadline, recording.stat().st_size
        await asyncio.sleep(0.1)
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(10)
    await live.http.close()
    return done, daemon_factory("--model", "tiny.en", data_dir=d.data_dir)


async def test_a_daemon_killed_mid_session_transcribes_what_it_received_on_restart(
    daemon_factory: Any,
) -> None:
    """One turn committed and stored, a second sentence sent and never
    committed, then ``kill -9``: on the next start the job is finished as a file
    job from the end of the stored turn, so it holds the turn once and the
    uncommitted sentence's words (the recording's tail), nothing twice."""
    d = daemon_factory("--model", "tiny.en")
    live = await Live.open(d)
    job_id = live.session["job_id"]
    done, restarted = await killed_after_a_turn_and_a_tail(d, live, daemon_factory)
    job = wait_status(restarted, job_id, "completed", timeout=120)
    assert job["duration"] == pytest.approx(7.177 + 4.233, abs=0.1)  # all that was received
    assert job["language"] == "en"
    stored = transcript(restarted, job_id).lower()
    for word in ("fox", "forest", "quarterly", "finance"):
        assert stored.count(word) == 1, stored
    report = json.loads((AUDIO / "manifest.json").read_text())["report.wav"]["text"]
    assert word_error(done["transcript"] + " " + report, stored) <= 0.15
    segments = get(restarted, f"/v1/jobs/{job_id}/transcript?format=verbose_json").json()
    assert [s["id"] for s in segments["segments"]] == list(range(len(segments["segments"])))


async def test_a_resume_takes_over_a_socket_the_server_still_holds(daemon_factory: Any) -> None:
    """A connection that died without the server noticing yet (no close, no
    reset) must not keep its client out: the resume closes it."""
    d = daemon_factory("--model", "tiny.en")
    first = await Live.open(d)
    await first.manual()
    second = await Live.open(d, first.session["id"])
    closing = await first.ws.receive(timeout=30)
    assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1008
    await first.http.close()
    await second.audio(clip("weather.wav"))
    await second.send("input_audio_buffer.commit")
    done = await second.next("conversation.item.input_audio_transcription.completed")
    assert "weather" in done["transcript"].lower()
    await second.close()
    assert wait_status(d, second.session["job_id"], "completed")["status"] == "completed"


def segments_of(daemon: Daemon, job_id: str) -> list[dict[str, Any]]:
    return json.loads(transcript(daemon, job_id, "verbose_json"))["segments"]


@pytest.mark.slow  # a real daemon or model for 10 s or more
async def test_a_second_pass_replaces_the_sessions_transcript(
    daemon_factory: Any, receiver: Any
) -> None:
    """``refine_model``: at the session's end its whole recording is queued as
    a file job (tiny.en here: the only model offline); when that completes,
    its transcript replaces the turns' and a signed webhook says so."""
    rx = receiver([])
    d = daemon_factory("--model", "tiny.en", env={"SONA_WEBHOOK_SECRET": SECRET})
    live = await Live.open(d, refine_model="tiny.en", callback_url=rx.url)
    job_id = live.session["job_id"]
    await live.manual()
    asked = {"language": "en", "prompt": "A fox and a report."}
    session = {"type": "transcription", "audio": {"input": {"transcription": asked}}}
    await live.send("session.update", session=session)
    await live.next("session.updated")
    for name in ("fox.wav", "report.wav"):
        await live.audio(clip(name))
        await live.send("input_audio_buffer.commit")
        await live.next("conversation.item.input_audio_transcription.completed")
    turns = " ".join(live.texts())
    await live.close()
    job = wait_status(d, job_id, "completed")
    second_id = job["metadata"]["refined_by"]
    assert job["metadata"]["refine_model"] == "tiny.en"
    second = wait_status(d, second_id, "completed")
    assert second["refines"] == job_id and second["priority"] == 0
    assert second["duration"] == job["duration"]
    assert (second["options"]["language"], second["options"]["prompt"]) == ("en", asked["prompt"])
    assert second["model"] == second["options"]["model"] == "tiny.en"
    # its own file, the same audio: a hard link, so deleting one keeps the other's
    assert (
        get(d, f"/v1/jobs/{second_id}/audio").content == get(d, f"/v1/jobs/{job_id}/audio").content
    )
    links = [p for p in (d.data_dir / "uploads").iterdir() if p.stat().st_nlink == 2]
    assert len(links) == 2
    hits = rx.wait_for(3)
    events = [Webhook(SECRET).verify(h.body, h.headers) for h in hits]  # raises when wrong
    by_type = {(e["type"], e["data"]["job_id"]): e for e in events}
    replaced = by_type[("job.transcript_replaced", job_id)]
    assert ("job.completed", job_id) in by_type and ("job.completed", second_id) in by_type
    refined = job_of(d, job_id)
    assert replaced["data"]["text"] == refined["text"] == second["text"]
    assert replaced["data"]["metadata"]["refined_by"] == second_id
    assert segments_of(d, job_id) == segments_of(d, second_id)  # words, scores and all
    assert refined["segments_done"] == second["segments_done"]
    assert word_error(turns, refined["text"]) <= 0.1


async def test_an_unknown_refine_model_refuses_the_session(daemon_factory: Any) -> None:
    d = daemon_factory("--model", "tiny.en")
    for params, code in (
        ({"refine_model": "no-such-model"}, "model_not_found"),
        ({"callback_url": "ftp://example.com/x"}, "invalid_callback_url"),
    ):
        live = await Live.connect(d, **params)
        error = await live.next("error")
        assert error["error"]["code"] == code, error
        assert error["error"]["param"] == next(iter(params)), error
        closing = await live.ws.receive(timeout=10)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1008
        await live.http.close()
    assert get(d, "/v1/jobs").json()["data"] == []  # nothing was recorded


@pytest.mark.slow  # a real daemon or model for 10 s or more
async def test_a_daemon_killed_mid_session_queues_the_second_pass_on_restart(
    daemon_factory: Any,
) -> None:
    """kill -9 with a turn stored and a sentence never committed: on the next
    start a worker finishes the job from the end of the turn (a second run),
    and the write that completes it queues the second pass over the whole
    recording, with the options the job stored."""
    d = daemon_factory("--model", "tiny.en")
    live = await Live.open(d, refine_model="tiny.en")
    job_id = live.session["job_id"]
    _, restarted = await killed_after_a_turn_and_a_tail(d, live, daemon_factory)
    job = wait_status(restarted, job_id, "completed", timeout=120)
    assert job["attempts"] == 2  # the session's run, then a worker's
    second = wait_status(restarted, job["metadata"]["refined_by"], "completed", timeout=120)
    assert second["refines"] == job_id
    assert second["options"] == {**job["options"], "model": "tiny.en"}  # as stored at open
    assert second["duration"] == pytest.approx(7.177 + 4.233, abs=0.1)  # the whole recording
    assert segments_of(restarted, job_id) == segments_of(restarted, second["id"])
    refined = job_of(restarted, job_id)["text"].lower()
    for word in ("fox", "quarterly"):
        assert refined.count(word) == 1, refined
