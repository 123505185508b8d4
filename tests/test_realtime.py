"""Live sessions through the real ``openai`` SDK's realtime client against a
running daemon: real speech streamed in 100 ms frames, at real-time pace with
server VAD and faster with the client's commits; every server event is
validated against the SDK's own pydantic types."""

from __future__ import annotations

import asyncio
import base64
import re
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import jiwer
import openai
import pytest
from openai.types.realtime.realtime_server_event import RealtimeServerEvent
from pydantic import TypeAdapter

from tests.audio_factory import concat_wav
from tests.conftest import AUDIO, Daemon, start_daemon

CLIPS = ["fox.wav", "report.wav", "weather.wav", "numbers.wav", "meeting.wav"]
SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
FRAME_S = 0.1


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


def word_error(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(words(reference), words(hypothesis)))


def pcm24k(path: Path) -> bytes:
    """The file as 16-bit mono PCM at 24 kHz, as a microphone client sends it."""
    out = bytearray()
    resampler = av.AudioResampler(format="s16", layout="mono", rate=24_000)
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            for f in resampler.resample(frame):
                out += f.to_ndarray().tobytes()
    for f in resampler.resample(None):
        out += f.to_ndarray().tobytes()
    return bytes(out)


def clip_ends(gap_s: float) -> list[float]:
    """Where each clip of the concatenation ends, in seconds."""
    ends, t = [], 0.0
    for name in CLIPS:
        with wave.open(str(AUDIO / name)) as w:
            t += w.getnframes() / w.getframerate()
        ends.append(t + gap_s / 2)
        t += gap_s
    return ends


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("live") / "speech.wav"
    return concat_wav([AUDIO / n for n in CLIPS], out, gap_s=1.0)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    env = {"SONA_LIVE_PARTIAL_S": "2"}  # partial text on here; test_live_sessions: off
    d = start_daemon(tmp_path_factory.mktemp("rt") / "data", "--model", "tiny.en", env=env)
    yield d
    d.stop()
    if d.proc.stdout:
        d.proc.stdout.close()


@pytest.fixture(scope="module")
def file_transcript(daemon: Daemon, speech: Path) -> str:
    c = openai.OpenAI(base_url=f"{daemon.url}/v1", api_key="unused", max_retries=0)
    with c, speech.open("rb") as f:
        return c.audio.transcriptions.create(model="whisper-1", file=f).text


def client_for(daemon: Daemon) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{daemon.url}/v1",
        websocket_base_url=f"ws://127.0.0.1:{daemon.port}/v1",
        api_key="unused",
        max_retries=0,
    )


def session_update(turn_detection: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "type": "transcription",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": {"model": "whisper-1", "language": "en"},
                "turn_detection": turn_detection,
            }
        },
    }


async def stream(
    daemon: Daemon,
    pcm: bytes,
    *,
    pace: float,
    turn_detection: dict[str, Any] | None,
    commit_at: list[float] = (),  # type: ignore[assignment]
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Send ``pcm`` in 100 ms frames at ``pace`` × real time (0: at once), then
    wait for every turn's text. Returns every server event (validated) and,
    per item, when its text came after its audio's end was sent."""
    frame = int(24_000 * FRAME_S) * 2
    events: list[dict[str, Any]] = []
    committed_at: dict[str, float] = {}
    latency: dict[str, float] = {}
    client = client_for(daemon)
    connect = client.realtime.connect(extra_query={"intent": "transcription"})
    async with client, connect as conn:
        created = await conn.recv()
        assert created.type == "session.created"
        await conn.session.update(session=session_update(turn_detection))  # type: ignore[arg-type]

        async def reader() -> None:
            async for raw in conn:
                data = raw.model_dump(exclude_unset=True)
                SERVER_EVENT.validate_python(data)
                events.append(data)
                if data["type"] == "input_audio_buffer.committed":
                    committed_at[data["item_id"]] = time.monotonic()
                if data["type"].endswith("transcription.completed"):
                    latency[data["item_id"]] = time.monotonic() - committed_at[data["item_id"]]

        task = asyncio.create_task(reader())
        start = time.monotonic()
        marks = list(commit_at)
        for n, offset in enumerate(range(0, len(pcm), frame)):
            await conn.input_audio_buffer.append(
                audio=base64.b64encode(pcm[offset : offset + frame]).decode()
            )
            sent_s = (n + 1) * FRAME_S
            if marks and sent_s >= marks[0]:
                marks.pop(0)
                await conn.input_audio_buffer.commit()
            if pace:
                await asyncio.sleep(max(0.0, start + sent_s / pace - time.monotonic()))
        if turn_detection is None and (not commit_at or marks):
            await conn.input_audio_buffer.commit()
        else:  # trailing silence: server VAD hears the last turn end
            silence = base64.b64encode(bytes(frame)).decode()
            for _ in range(10):
                await conn.input_audio_buffer.append(audio=silence)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            done = sum(e["type"].endswith("transcription.completed") for e in events)
            if done and done == sum(e["type"] == "input_audio_buffer.committed" for e in events):
                break
            await asyncio.sleep(0.1)
        task.cancel()
    return events, latency


def transcript(events: list[dict[str, Any]]) -> str:
    return " ".join(
        e["transcript"] for e in events if e["type"].endswith("transcription.completed")
    )


@pytest.mark.slow  # a real daemon or model for 10 s or more
async def test_server_vad_at_real_time_matches_a_file_job(
    daemon: Daemon, speech: Path, file_transcript: str
) -> None:
    events, latency = await stream(
        daemon, pcm24k(speech), pace=1.0, turn_detection={"type": "server_vad"}
    )
    kinds = [e["type"] for e in events]
    turns = kinds.count("input_audio_buffer.speech_started")
    assert len(CLIPS) <= turns <= 2 * len(CLIPS), kinds  # a pause inside a sentence may end one
    assert kinds.count("input_audio_buffer.speech_stopped") == turns, kinds
    assert kinds.count("conversation.item.input_audio_transcription.completed") == turns
    live = transcript(events)
    assert word_error(file_transcript, live) <= 0.05, (file_transcript, live)
    print("latency per turn (s):", sorted(round(v, 2) for v in latency.values()))


@pytest.mark.slow  # a real daemon or model for 10 s or more
async def test_client_commits_faster_than_real_time(
    daemon: Daemon, speech: Path, file_transcript: str
) -> None:
    events, _ = await stream(
        daemon, pcm24k(speech), pace=4.0, turn_detection=None, commit_at=clip_ends(1.0)
    )
    completed = [e for e in events if e["type"].endswith("transcription.completed")]
    assert len(completed) == len(CLIPS)
    # in the order spoken: each committed item's text follows the one before
    committed = [e["item_id"] for e in events if e["type"] == "input_audio_buffer.committed"]
    assert [e["item_id"] for e in completed] == committed
    assert word_error(file_transcript, transcript(events)) <= 0.05


def deltas_of(events: list[dict[str, Any]], item_id: str) -> list[str]:
    return [
        e["delta"]
        for e in events
        if e["type"].endswith("transcription.delta") and e["item_id"] == item_id
    ]


async def test_deltas_carry_the_text_before_completed(daemon: Daemon) -> None:
    events, _ = await stream(daemon, pcm24k(AUDIO / "fox.wav"), pace=0, turn_detection=None)
    done = next(e for e in events if e["type"].endswith("transcription.completed"))
    assert "".join(deltas_of(events, done["item_id"])).split() == done["transcript"].split()
    assert "fox" in done["transcript"].lower()
    assert done["usage"]["type"] == "duration" and done["usage"]["seconds"] > 6


def test_the_http_endpoint_refuses_a_plain_get(daemon: Daemon) -> None:
    r = httpx.get(f"{daemon.url}/v1/realtime")
    assert r.status_code == 426, r.text
    assert r.json()["error"]["code"] == "upgrade_required"


@pytest.mark.slow  # a real daemon or model for 10 s or more
async def test_turns_of_sessions_ending_together_each_get_their_own_text(daemon: Daemon) -> None:
    """Committed at once, the turns share one engine batch: each session still
    gets its own sentence back."""
    names = ["fox.wav", "report.wav", "weather.wav", "numbers.wav"]
    runs = await asyncio.gather(
        *(stream(daemon, pcm24k(AUDIO / n), pace=0, turn_detection=None) for n in names)
    )
    expected = {"fox.wav": "fox", "report.wav": "quarterly", "weather.wav": "weather"}
    for name, (events, _) in zip(names, runs, strict=True):
        said = transcript(events)
        assert expected.get(name, "books") in said.lower(), (name, said)


@pytest.mark.slow  # a real daemon or model for 10 s or more
async def test_a_long_turn_sends_partial_text_while_it_is_spoken(daemon: Daemon) -> None:
    """Streamed at real time without VAD, fox.wav (7 s) is decoded again every
    2 s of it (live_partial_s, set for this module's daemon): words come as
    deltas before the commit, and the deltas only ever add up to the final
    text. The turn then goes on in silence for 15 s before the commit: a
    generous bound for the partial decodes on a loaded machine."""
    silence = b"\x00\x00" * 24_000 * 15
    events, _ = await stream(
        daemon, pcm24k(AUDIO / "fox.wav") + silence, pace=1.0, turn_detection=None
    )
    kinds = [e["type"] for e in events]
    committed = kinds.index("input_audio_buffer.committed")
    early = [e for e in events[:committed] if e["type"].endswith("transcription.delta")]
    assert early, kinds
    done = next(e for e in events if e["type"].endswith("transcription.completed"))
    said = "".join(deltas_of(events, done["item_id"])).split()
    assert said == done["transcript"].split()[: len(said)]
    assert "quick" in " ".join(said).lower()
