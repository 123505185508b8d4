"""The engine process: what runs on the far side of ``engine/host.py``'s pipe.

Three kinds of thread, so that no job waits on another's slow part:

* the main thread reads commands; loading and unloading models happen right
  there, so every later command finds the model it names; it answers the
  host's pings too, so a stopped or wedged process shows (``host.silent_s``);
* one producer thread per open job decodes its file as a stream and cuts it
  into chunks, staying at most ``EngineConfig.ahead`` chunks ahead of the
  batches (memory does not grow with the file); a close stops it at the next
  block;
* ``EngineConfig.replicas`` inference threads decode batches, each one
  ``Step`` at a time on its own CTranslate2 replica of the model.

Messages out (replies and events) go through one lock-guarded pipe."""

from __future__ import annotations

import functools
import itertools
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from sona.audio import DecodeReport, decode_blocks
from sona.crashpoints import crash_point
from sona.engine import (
    SPEAKERS,
    ChunkInfo,
    ChunksReady,
    Detection,
    Engine,
    EngineConfig,
    JobSpec,
    Prepared,
    PrepareFailed,
    sequential_too_long,
)
from sona.engine.batcher import owner, pack
from sona.engine.chunker import SAMPLE_RATE, Chunker, RawChunk
from sona.engine.live_turns import take_turns, transcribe_turns
from sona.engine.messages import (
    Close,
    Detect,
    Load,
    Open,
    Ping,
    Pong,
    Reply,
    Step,
    Transcribe,
    Unload,
)
from sona.engine.whisper import Stopped, speech_detector
from sona.errors import AudioTooLong, SonaError
from sona.jobs import Segment


class _Job:
    """One open job: its cut chunks waiting for a batch."""

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self.language: str | None = None
        self.language_probability: float | None = None
        self.cut = 0  # the next chunk's number: those cut so far, and those skipped or stored
        self.duration = 0.0
        self.decoded = DecodeReport()
        # Sequential decoding: the generator a "chunk" (one segment) is pulled from.
        self.segments: Iterator[tuple[int, Segment]] | None = None
        self.closed = threading.Event()
        self._ready: dict[int, RawChunk] = {}
        self._cond = threading.Condition()

    def put(self, no: int, chunk: RawChunk, ahead: int) -> None:
        with self._cond:
            while len(self._ready) >= ahead and not self.closed.is_set():
                self._cond.wait()
            self._ready[no] = chunk

    def take(self, no: int) -> RawChunk | None:
        with self._cond:
            chunk = self._ready.pop(no, None)
            self._cond.notify_all()
            return chunk

    def close(self) -> None:
        with self._cond:
            self.closed.set()
            self._ready.clear()
            self._cond.notify_all()


class EngineProcess:
    def __init__(self, conn: Connection, config: EngineConfig, backend: Engine) -> None:
        self.conn = conn
        self.config = config
        self.backend = backend
        self.jobs: dict[str, _Job] = {}
        # A live turn (priority 0) goes before every job's step (1): it waits at
        # most for the steps already decoding (docs/api.md, Live sessions).
        self._steps: queue.PriorityQueue[tuple[int, int, Step | Transcribe]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._send_lock = threading.Lock()

    def send(self, msg: object) -> None:
        with self._send_lock:
            self.conn.send(msg)

    def serve(self) -> None:
        for n in range(self.config.replicas):  # one per CTranslate2 replica
            threading.Thread(target=self._infer, name=f"sona-infer-{n}", daemon=True).start()
        while True:
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                return  # the daemon is gone: nothing left to work for
            if msg is None:
                return
            self._dispatch(msg)

    def _dispatch(self, msg: object) -> None:
        match msg:
            case Ping():
                self.send(Pong())
            case Load(req, model_id, path):
                crash_point("engine_load", model_id, segfault=True)
                self._reply(req, lambda: self.backend.load(model_id, path))
            case Unload(req, model_id):
                self._reply(req, lambda: self.backend.unload(model_id))
            case Open(spec):
                job = self.jobs[spec.job_id] = _Job(spec)
                threading.Thread(target=self._produce, args=(job,), daemon=True).start()
            case Close(job_id):
                closing = self.jobs.pop(job_id, None)
                if closing is not None:
                    closing.close()
            case Step():
                self._steps.put((1, next(self._order), msg))
            case Transcribe():
                self._steps.put((0, next(self._order), msg))
            case Detect(req):
                # Off the main thread: decoding the file's start takes a while.
                work = functools.partial(self._detect, msg)
                threading.Thread(target=self._reply, args=(req, work), daemon=True).start()

    def _reply(self, req: int, work: Any) -> None:
        try:
            self.send(Reply(req, work()))
        except SonaError as exc:
            self.send(Reply(req, error=(exc.code, exc.message)))
        except Exception as exc:  # reported to the worker, which fails the batch's jobs
            self.send(Reply(req, error=("engine_error", f"{type(exc).__name__}: {exc}")))

    def _infer(self) -> None:
        while True:
            _, _, work = self._steps.get()
            if isinstance(work, Transcribe):
                self._transcribe(take_turns(work, self._steps))
            else:
                self._reply(work.req, functools.partial(self._step, work))

    def _transcribe(self, turns: list[Transcribe]) -> None:
        """Live turns, one batch (``engine/live_turns.py``); each request answered."""
        try:
            results = transcribe_turns(
                self.backend, self._turn_chunker(turns[0]), turns, fit=self.config.fit_windows
            )
        except SonaError as exc:
            for turn in turns:
                self.send(Reply(turn.req, error=(exc.code, exc.message)))
            return
        except Exception as exc:  # reported to each session, which says the turn failed
            for turn in turns:
                self.send(Reply(turn.req, error=("engine_error", f"{type(exc).__name__}: {exc}")))
            return
        for turn, result in zip(turns, results, strict=True):
            self.send(Reply(turn.req, result))

    def _turn_chunker(self, turn: Transcribe) -> Callable[[], Chunker]:
        chunk_s = self.config.chunk_s
        return lambda: Chunker(speech_detector(chunk_s, turn.options), max_s=chunk_s)

    def _step(self, step: Step) -> list[list[Segment]]:
        """Segments per item; an item whose job was closed meanwhile gets []."""
        results: list[list[Segment]] = [[] for _ in step.items]
        first = self.jobs.get(step.items[0].job_id)
        if first is not None and first.segments is not None:
            return [self._next_segment(first, step.items[0])]  # batched with nobody
        live = []
        for n, item in enumerate(step.items):
            job = self.jobs.get(item.job_id)
            chunk = job.take(item.no) if job else None
            if job and chunk is not None:
                live.append((n, item, job, chunk))
        if not live:
            return results
        crash_point("engine_step", *(i.job_id for i in step.items), segfault=True)
        first = live[0][2]
        rows = [
            [live[i] for i in row]
            for row in pack(
                [owner(item, c.audio.size / SAMPLE_RATE) for _, item, _, c in live],
                self.config.chunk_s,
            )
        ]
        jobs = {id(job): job for *_, job, _ in live}.values()
        try:
            decoded = self.backend.decode(
                step.model_id,
                first.spec.options,
                first.language or "en",
                [[chunk for *_, chunk in row] for row in rows],
                stop=lambda: all(job.closed.is_set() for job in jobs),
                fit=self.config.fit_windows,
            )
        except Stopped:  # cancelled mid-batch: nobody waits for these segments
            return results
        for row, row_segments in zip(rows, decoded, strict=True):
            for (n, item, job, _), segments in zip(row, row_segments, strict=True):
                speaker = SPEAKERS[item.channel] if job.spec.channels == 2 else None
                results[n] = [replace(s, speaker=speaker) for s in segments]
        return results

    def _produce(self, job: _Job) -> None:
        spec = job.spec
        crash_point("engine_open", spec.job_id, segfault=True)
        try:
            if spec.options.condition_on_previous_text:
                self._open_sequential(job)
                return
            # A cut from ``from_s`` on: chunks numbered after the stored ones, none skipped.
            start = 0 if spec.from_s is None else round(spec.from_s * SAMPLE_RATE)
            job.cut = 0 if spec.from_s is None else spec.skip_chunks
            detect = speech_detector(self.config.chunk_s, spec.options) if spec.vad else None
            chunkers = [
                Chunker(detect, max_s=self.config.chunk_s, start=start)
                for _ in range(spec.channels)
            ]
            blocks = decode_blocks(
                spec.path, max_seconds=spec.max_seconds, channels=spec.channels, report=job.decoded
            )
            before = start  # samples still to pass over: covered by the stored chunks
            for block in blocks:
                if job.closed.is_set():
                    return
                if before:
                    passed = min(before, block.shape[-1])
                    block, before = block[..., passed:], before - passed
                rows = list(block) if spec.channels == 2 else [block]
                for ch, row in enumerate(rows):
                    self._announce(job, ch, chunkers[ch].feed(row))
            for ch, chunker in enumerate(chunkers):
                self._announce(job, ch, chunker.finish())
            if not job.closed.is_set():
                self._prepared(job, job.decoded.seconds, job.cut)
        except SonaError as exc:
            self.send(PrepareFailed(spec.job_id, exc.code, exc.message, spec.token))
        except Exception as exc:  # a decoder fault fails this job only
            message = f"{type(exc).__name__}: {exc}"
            self.send(PrepareFailed(spec.job_id, "engine_error", message, spec.token))

    def _prepared(self, job: _Job, duration: float, total: int) -> None:
        """All chunks announced; the duration is what was decoded, not what a
        header claimed."""
        spec = job.spec
        warnings = job.decoded.warnings()
        language, probability = job.language, job.language_probability
        self.send(
            Prepared(spec.job_id, duration, total, spec.token, warnings, language, probability)
        )

    def _detect(self, msg: Detect) -> Detection | None:
        """The language of the file's first chunk of speech: the chunk a job of
        the same file detects its language on, so both answer alike. None when
        the file holds no speech (a job of it has no language either)."""
        chunker = Chunker(speech_detector(self.config.chunk_s), max_s=self.config.chunk_s)
        # Decoding stops at the first chunk: the rest of the file is never read.
        for block in decode_blocks(msg.path, max_seconds=msg.max_seconds, channels=1):
            if chunks := chunker.feed(block):
                return self.backend.detect(msg.model_id, chunks[0].audio)
        if chunks := chunker.finish():
            return self.backend.detect(msg.model_id, chunks[0].audio)
        return None

    def _announce(self, job: _Job, channel: int, chunks: list[RawChunk]) -> None:
        spec = job.spec
        for chunk in chunks:
            no, job.cut = job.cut, job.cut + 1
            if job.closed.is_set():
                continue
            # On chunk 0, stored or not: a resume detects the same. A cut from
            # ``from_s`` detects on its own first chunk (the stored turns' is kept).
            if job.language is None:
                found = self.backend.language(spec.model_id, spec.options, chunk.audio)
                job.language, job.language_probability = found
            if no < spec.skip_chunks:
                continue  # stored by an earlier attempt
            job.put(no, chunk, self.config.ahead)
            seconds = chunk.audio.size / SAMPLE_RATE
            info = ChunkInfo(spec.job_id, no, channel, chunk.start, chunk.end, seconds)
            language, probability = job.language, job.language_probability
            self.send(ChunksReady(spec.job_id, [info], language, spec.token, probability))

    def _open_sequential(self, job: _Job) -> None:
        """The whole file goes to faster-whisper's sequential decoder (its memory
        grows with the file, as faster-whisper's own does, so the file is held
        to ``max_sequential_seconds`` by the sample counter, whatever its
        header said); each step pulls one segment, as chunk number ``n``."""
        spec = job.spec
        limit = self.config.max_sequential_seconds
        try:
            blocks = list(
                decode_blocks(
                    spec.path,
                    max_seconds=min(spec.max_seconds, limit),
                    channels=spec.channels,
                    report=job.decoded,
                )
            )
        except AudioTooLong:
            if limit < spec.max_seconds:
                raise sequential_too_long(limit) from None
            raise
        rows = np.concatenate(blocks, axis=-1)
        channels = list(rows) if spec.channels == 2 else [rows]
        job.duration = channels[0].size / SAMPLE_RATE
        streams = []
        for ch, samples in enumerate(channels):
            language, probability, segments = self.backend.sequential(
                spec.model_id, spec.options, samples, spec.vad
            )
            if job.language is None:
                job.language, job.language_probability = language, probability
            streams.append((ch, seg) for seg in segments)
        job.segments = itertools.chain(*streams)
        for _ in range(spec.skip_chunks):  # stored by an earlier attempt
            next(job.segments, None)
        job.cut = spec.skip_chunks
        self._announce_next(job)

    def _announce_next(self, job: _Job) -> None:
        info = ChunkInfo(job.spec.job_id, job.cut, 0, 0.0, 0.0)
        language, probability = job.language or "en", job.language_probability
        self.send(ChunksReady(job.spec.job_id, [info], language, job.spec.token, probability))

    def _next_segment(self, job: _Job, item: ChunkInfo) -> list[Segment]:
        """One step of a sequential job: its next segment, or the end of it."""
        got = next(job.segments, None) if job.segments is not None else None
        if got is None:
            self._prepared(job, job.duration, item.no + 1)
            return []
        channel, segment = got
        job.cut = item.no + 1
        self._announce_next(job)
        speaker = SPEAKERS[channel] if job.spec.channels == 2 else None
        return [replace(segment, speaker=speaker)]
