"""A live transcription session: audio arrives in frames, is cut into turns
(by the client's commits, or by server VAD), and each turn is decoded by the
engine ahead of the jobs' batches (``EngineHost.transcribe``); its text goes
back as events. No HTTP here: ``api/realtime.py`` speaks the WebSocket.

Turns are decoded one after another in the order they were committed, so the
``completed`` events come in the order the turns were spoken. An engine that
dies mid-turn is restarted by its host; the turn is decoded again on the new
one, so a crash costs time, not text."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog

from sona import realtime_events as ev
from sona.engine import EngineHost
from sona.engine.registry import OPENAI_ALIASES, ModelRegistry
from sona.errors import EngineCrashed, InvalidRequest, SonaError
from sona.events import EventHub
from sona.intake import Intake
from sona.jobs import Segment, TranscribeOptions
from sona.live_audio import RATE, Resampler, TurnDetector, pcm16
from sona.live_partial import PartialText
from sona.live_record import LiveRecording
from sona.notify import Notifier
from sona.settings import Settings
from sona.store import JobStore
from sona.uploads import UploadDir

log = structlog.get_logger("sona.live")
Emit = Callable[[dict[str, Any]], Awaitable[None]]
CRASH_RETRIES = 3
REPLAY_EVENTS = 256  # kept for a resume's last_event_id (deltas and turns)


class LiveLimit(SonaError):
    """A limit that ends the session (its ``code`` says which)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class TooFast(InvalidRequest):
    code = "too_fast"


@dataclass(frozen=True)
class Turn:
    no: int  # counts a session's turns from 0: its job's chunk number
    item_id: str
    start: int  # samples at 16 kHz from the session's first
    audio: np.ndarray
    partial: PartialText | None = None  # what deltas already said of it


@dataclass(frozen=True)
class LiveDeps:
    """What a session uses of the runtime."""

    engine: EngineHost
    models: ModelRegistry
    intake: Intake
    settings: Settings
    store: JobStore
    events: EventHub
    uploads: UploadDir
    notifier: Notifier


def model_name(asked: str | None) -> str | None:
    """An OpenAI transcription model's name means Sona's default model."""
    if asked is None or asked in OPENAI_ALIASES or asked.startswith(("gpt-", "whisper-")):
        return None
    return asked


class LiveSession:
    """One session's state: the uncommitted audio, the turn detector, the turns
    waiting for the engine."""

    def __init__(self, deps: LiveDeps, emit: Emit) -> None:
        self.id = ev.new_id("sess")
        self.config = ev.SessionConfig()
        self._deps = deps
        self._engine, self._models, self._intake = deps.engine, deps.models, deps.intake
        self._settings = deps.settings
        self._emit: Emit | None = emit
        self._undelivered: list[dict[str, Any]] = []  # while no client is attached
        # The last events written to a socket: one that died may not have
        # handed them to its client (no acknowledgement in the protocol), so a
        # resume naming the last event it read gets the rest again.
        self._sent: collections.deque[dict[str, Any]] = collections.deque(maxlen=REPLAY_EVENTS)
        self.recording: LiveRecording | None = None
        self._turn_no = 0
        self._resampler = Resampler(self.config.rate)
        self._detector = self._new_detector()
        self._buffer: list[np.ndarray] = []
        self._buffer_start = 0  # the first buffered sample, from the session's start
        self._received = 0  # samples at 16 kHz
        self._item: str | None = None  # the turn server VAD heard start
        self._previous: str | None = None
        self._started = time.monotonic()
        self._turns: asyncio.Queue[Turn | None] = asyncio.Queue()
        self._partial: PartialText | None = None  # of the open turn, once decoded so far
        self._interim: asyncio.Task[None] | None = None
        self._interim_len = 0  # samples of the open turn its last interim decode had
        self._decoder = asyncio.create_task(self._decode_turns())

    async def start(
        self, *, callback_url: str | None = None, refine_model: str | None = None
    ) -> None:
        """Open the session's job (its recording). ``callback_url``: its
        webhooks; ``refine_model`` (resolved): its second pass at the end."""
        model_id = self._intake.resolve_model(model_name(self.config.model))
        deps = self._deps
        self.recording = await LiveRecording.open(
            store=deps.store,
            events=deps.events,
            notifier=deps.notifier,
            uploads=deps.uploads,
            session_id=self.id,
            model_id=model_id,
            options=self._options(),
            lease_s=self._settings.lease_s,
            max_attempts=self._settings.max_attempts,
            callback_url=callback_url,
            refine_model=refine_model,
        )

    @property
    def job_id(self) -> str | None:
        return self.recording.job_id if self.recording else None

    @property
    def received_ms(self) -> int:
        """Audio received so far: where a resuming client sends on from."""
        return self._received * 1000 // RATE

    async def send(self, event: dict[str, Any]) -> None:
        emit = self._emit
        if emit is None:
            self._undelivered.append(event)
            return
        try:
            await emit(event)
        except ConnectionError:  # the client went while we wrote: kept for a resume
            self._undelivered.append(event)
            return
        self._sent.append(event)

    def detach(self) -> None:
        """The client is gone; what happens meanwhile waits for its return."""
        self._emit = None

    async def attach(self, emit: Emit, last_event_id: str | None = None) -> None:
        """A client resumed the session: what it missed first, in order — the
        events written after ``last_event_id`` (the last one it read) to the
        socket that died, then those held while none was attached."""
        self._emit = emit
        kept = list(self._sent)
        ids = [e["event_id"] for e in kept]
        read = ids.index(last_event_id) + 1 if last_event_id in ids else len(kept)
        # What follows is sent (and kept) again: once in the record, in order.
        self._sent = collections.deque(kept[:read], maxlen=REPLAY_EVENTS)
        missed, self._undelivered = [*kept[read:], *self._undelivered], []
        for event in missed:
            await self.send(event)

    async def send_error(
        self, code: str, message: str, *, param: str | None = None, about: str | None = None
    ) -> None:
        await self.send(ev.error(code, message, param=param, about=about))

    @property
    def seconds(self) -> float:
        return self._received / RATE

    def _new_detector(self) -> TurnDetector | None:
        td = self.config.turn_detection
        if td is None:
            return None
        return TurnDetector(td.threshold, td.prefix_padding_ms, td.silence_duration_ms)

    def update(self, session: Any) -> None:
        config = ev.updated(self.config, session)
        if config.model != self.config.model:
            self._intake.resolve_model(model_name(config.model))  # an unknown model: now
        if config.rate != self.config.rate:
            if self._received:
                raise ev.UnsupportedFormat(
                    "the input format cannot change once audio was sent",
                    param="session.audio.input.format",
                )
            self._resampler = Resampler(config.rate)
        turn_changed = config.turn_detection != self.config.turn_detection
        self.config = config
        if turn_changed:
            self._detector = self._new_detector()

    async def append(self, pcm: bytes) -> None:
        if len(pcm) % 2:
            raise InvalidRequest("audio is 16-bit PCM: an even number of bytes", param="audio")
        seconds = len(pcm) / 2 / self.config.rate
        if self.seconds + seconds > self._settings.live_max_session_s:
            raise LiveLimit(
                "session_too_long",
                f"a live session holds at most {self._settings.live_max_session_s:g} s of audio "
                "(live_max_session_s)",
            )
        ahead = self.seconds + seconds - (time.monotonic() - self._started)
        if ahead > self._settings.live_max_ahead_s:
            raise TooFast(
                f"audio is arriving {ahead:.0f} s ahead of real time, more than "
                f"{self._settings.live_max_ahead_s:g} s (live_max_ahead_s): this frame was dropped"
            )
        samples, events = await asyncio.to_thread(self._ingest, pcm)
        self._received += samples.size
        self._buffer.append(samples)
        for vad in events:
            await self._on_vad(vad.kind, vad.sample)
        if self._detector is not None and self._item is None:
            self._drop_before(self._received - RATE)  # silence: only the prefix may be needed
        elif self._received - self._buffer_start > self._settings.live_max_turn_s * RATE:
            await self.commit(auto=True)
        else:
            self._maybe_interim()

    def _maybe_interim(self) -> None:
        """Decode the open turn so far, every ``live_partial_s`` of it, one at a
        time (``live_partial.py``): its words become deltas while it is spoken."""
        every = self._settings.live_partial_s
        length = self._received - self._buffer_start
        if not every or length - self._interim_len < every * RATE:
            return
        if self._interim is not None and not self._interim.done():
            return
        if self._item is None:  # no VAD: the item the commit will name, chosen now
            self._item = ev.new_id("item")
        self._partial = self._partial or PartialText()
        self._interim_len = length
        audio = self._take(self._received)
        self._buffer = [audio]  # _take keeps the rest: here, put the turn back whole
        turn = Turn(-1, self._item, self._buffer_start, audio, self._partial)
        self._interim = asyncio.create_task(self._interim_decode(turn))

    async def _interim_decode(self, turn: Turn) -> None:
        try:
            _, segments = await self._decode(turn)
        except SonaError:
            return  # the committed turn will say
        partial = turn.partial
        if partial is None or partial is not self._partial:
            return  # committed or cleared meanwhile: the final text speaks for it
        delta = partial.interim(" ".join(s.text.strip() for s in segments))
        if delta:
            await self.send(self._delta_event(turn.item_id, delta))

    @staticmethod
    def _delta_event(item_id: str, delta: str) -> dict[str, Any]:
        return ev.event(
            "conversation.item.input_audio_transcription.delta",
            item_id=item_id,
            content_index=0,
            delta=delta,
        )

    def _ingest(self, pcm: bytes) -> tuple[np.ndarray, list[Any]]:
        """Off the event loop, in one thread hop (a commit waits for the frames
        sent before it): decode, resample, record, detect."""
        samples = self._resampler(pcm16(pcm))
        if self.recording is not None:
            self.recording.append(samples)
        return samples, self._detector.feed(samples) if self._detector else []

    async def _on_vad(self, kind: str, sample: int) -> None:
        if kind == "started":
            self._drop_before(sample)
            self._item = ev.new_id("item")
            await self.send(
                ev.event(
                    "input_audio_buffer.speech_started",
                    audio_start_ms=sample * 1000 // RATE,
                    item_id=self._item,
                )
            )
        elif self._item is not None:
            await self.send(
                ev.event(
                    "input_audio_buffer.speech_stopped",
                    audio_end_ms=sample * 1000 // RATE,
                    item_id=self._item,
                )
            )
            await self._commit_until(sample, self._item)

    def _drop_before(self, sample: int) -> None:
        audio = self._take(self._received)
        keep = max(0, sample - self._buffer_start)
        self._buffer = [audio[keep:]]
        self._buffer_start += min(keep, audio.size)

    def _take(self, until: int) -> np.ndarray:
        """The buffered samples before ``until``; the rest stays buffered."""
        audio = np.concatenate(self._buffer) if self._buffer else np.zeros(0, np.float32)
        cut = max(0, min(until - self._buffer_start, audio.size))
        self._buffer = [audio[cut:]]
        return audio[:cut]

    async def commit(self, *, auto: bool = False) -> None:
        if self._received == self._buffer_start:
            if auto:
                return
            raise InvalidRequest(
                "the input audio buffer is empty: nothing to commit",
                param="input_audio_buffer",
            )
        item = self._item or ev.new_id("item")
        await self._commit_until(self._received, item)
        if auto and self._detector is not None:  # still speaking: the rest is the next turn
            self._item = ev.new_id("item")

    async def _commit_until(self, sample: int, item: str) -> None:
        start = self._buffer_start
        audio = self._take(sample)
        self._buffer_start = start + audio.size
        self._item = None
        await self.send(
            ev.event("input_audio_buffer.committed", item_id=item, previous_item_id=self._previous)
        )
        self._previous = item
        self._turns.put_nowait(Turn(self._turn_no, item, start, audio, self._partial))
        self._turn_no += 1
        self._partial, self._interim_len = None, 0

    async def clear(self) -> None:
        self._take(self._received)
        self._buffer_start = self._received
        self._item = None
        self._partial, self._interim_len = None, 0
        await self.send(ev.event("input_audio_buffer.cleared"))

    async def _decode_turns(self) -> None:
        while (turn := await self._turns.get()) is not None:
            failure: SonaError | None = None
            try:
                language, segments = await self._decode(turn)
            except SonaError as exc:
                failure, language, segments = exc, None, []
            await self._record(turn, segments, language)  # a failed turn too: numbering
            if failure is not None:
                log.warning("live.turn_failed", session=self.id, code=failure.code)
                await self.send(ev.failed(turn.item_id, failure.code, failure.message))
                continue
            text = " ".join(s.text.strip() for s in segments).strip()
            seconds = turn.audio.size / RATE
            # What deltas did not say yet (all of it for a short turn, whisper-1's way).
            delta = (turn.partial or PartialText()).final(text)
            if delta:
                await self.send(self._delta_event(turn.item_id, delta))
            await self.send(ev.completed(turn.item_id, text, seconds))

    async def _record(self, turn: Turn, segments: list[Segment], language: str | None) -> None:
        if self.recording is None:
            return
        try:
            span = (turn.start / RATE, (turn.start + turn.audio.size) / RATE)
            await self.recording.turn(turn.no, span, segments, language)
        except Exception:  # the store's trouble costs the job this turn, not the session
            log.exception("live.record_failed", session=self.id, turn=turn.no)

    def _options(self) -> TranscribeOptions:
        return TranscribeOptions(language=self.config.language, prompt=self.config.prompt)

    async def _decode(self, turn: Turn) -> tuple[str | None, list[Segment]]:
        options = self._options()
        model_id = self._intake.resolve_model(model_name(self.config.model))
        for attempt in range(CRASH_RETRIES + 1):
            entry = await self._models.acquire(model_id)
            try:
                return await self._engine.transcribe(entry.id, options, turn.audio)
            except EngineCrashed:
                if attempt == CRASH_RETRIES:
                    raise
                log.warning("live.engine_crashed", session=self.id, retry=attempt + 1)
            finally:
                self._models.release(entry)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        """End the session: the turns already committed are decoded and stored,
        then its job is completed with what was said. A turn server VAD heard
        start and not yet end is committed: it was said too."""
        if self._interim is not None:
            self._interim.cancel()
        if self._item is not None and not self._decoder.done():
            await self._commit_until(self._received, self._item)
        if not self._decoder.done():
            self._turns.put_nowait(None)
            await asyncio.gather(self._decoder, return_exceptions=True)
        if self.recording is not None:
            recording, self.recording = self.recording, None
            await recording.finish(self._options())
