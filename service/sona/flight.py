"""A job in flight in the worker, and its in-order store buffer. Pure: no I/O,
no engine (``tests/test_flight.py``).

Steps run in parallel and may end out of order, while a job's segments are
stored in chunk order (one write at a time per job). A decoded chunk waits in
its ``Flight`` until those before it are stored; ``take_write`` then takes the
run of chunks that comes next in order as one write — the segments numbered
in stored order and the seconds of audio processed so far — and ``stored``
advances the job once that write is committed."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from sona.engine import ChunkInfo, JobSpec
from sona.engine.batcher import Pending, batch_key
from sona.engine.registry import ModelEntry
from sona.jobs import Job, Segment
from sona.store import Claim

# Sequential decoding (condition_on_previous_text) keeps faster-whisper's own beam.
SEQUENTIAL_BEAM = 5


@dataclass(frozen=True)
class Write:
    """One in-order write of a job's decoded chunks: chunks ``first`` to
    ``first + count - 1``, their segments, and the job's processed seconds after it."""

    first: int
    count: int
    segments: list[Segment]
    processed_seconds: float


@dataclass
class Flight:
    """A job in flight: claimed, opened in the engine, its chunks on the way."""

    claim: Claim
    spec: JobSpec
    entry: ModelEntry
    deadline: float
    generation: int = -1  # the engine process it was opened in; -1: not yet
    total: int | None = None  # chunks in all, once the engine has cut them all
    language: str | None = None
    language_probability: float | None = None  # None: the job named its language
    chunks: dict[int, ChunkInfo] = field(default_factory=dict)
    decoded: dict[int, list[Segment]] = field(default_factory=dict)
    storing: bool = False  # a write of decoded chunks is under way (one at a time)
    channel_end: list[float] = field(default_factory=lambda: [0.0, 0.0])

    @property
    def job(self) -> Job:
        return self.claim.job

    @property
    def suspect(self) -> bool:
        """The engine died with this job in flight before: it may be the cause."""
        return self.claim.job.crashes > 0

    @property
    def done(self) -> bool:
        """Every chunk the engine cut is stored."""
        return self.total is not None and self.job.chunks_done >= self.total

    def cut(self, chunks: list[ChunkInfo], language: str) -> list[Pending]:
        """Chunks the engine cut for this job: kept until they are stored, and
        what the pool batches them as (a suspect's chunks go one to a batch)."""
        job = self.job
        pending = []
        for chunk in chunks:
            self.chunks[chunk.no] = chunk
            key = batch_key(self.spec.model_id, self.spec.options, language, chunk.job_id)
            pending.append(Pending(chunk, key, job.priority, job.created_at, self.suspect))
        return pending

    def ready(self) -> bool:
        """The chunk that comes next in order is decoded: a write can go."""
        return self.job.chunks_done in self.decoded

    def take_write(self) -> Write:
        """The decoded chunks that come next in order, taken out of the buffer
        as one write. Their segments are numbered on from those stored; the
        processed seconds are each channel's furthest end, averaged over the
        channels (two channels are cut and decoded on their own)."""
        first, nos = self.job.chunks_done, list[int]()
        while first + len(nos) in self.decoded:
            nos.append(first + len(nos))
        index = self.job.segments_done
        segments = []
        for no in nos:
            decoded = self.decoded.pop(no)
            for seg in decoded:
                segments.append(replace(seg, index=index))
                index += 1
            chunk = self.chunks.pop(no)
            # A sequential job's "chunk" is one segment, timed only once decoded.
            ends = [chunk.end, *(s.end for s in decoded)]
            self.channel_end[chunk.channel] = max(self.channel_end[chunk.channel], *ends)
        processed = sum(self.channel_end[: self.spec.channels]) / self.spec.channels
        return Write(first, len(nos), segments, processed)

    def stored(self, write: Write) -> float:
        """``write`` is committed: the job moves on past it. Returns the seconds
        of audio it added (for the worker's throughput)."""
        job = self.job
        job.chunks_done += write.count
        job.segments_done += len(write.segments)
        added = write.processed_seconds - job.processed_seconds
        job.processed_seconds = write.processed_seconds
        return added


def job_spec(
    claim: Claim, entry: ModelEntry, *, beam_size: int, max_seconds: float, channels: int
) -> JobSpec:
    """What the engine opens a claimed job with. ``beam_size`` is the worker's
    default for a job that names none; a re-run skips the chunks already stored.
    A live session's job (its daemon died, it was requeued) goes on after the
    turns it stored: its turns are not cuts of the file, so the engine cuts
    only the audio after them (``from_s``), numbering on from theirs."""
    job = claim.job
    options = job.options
    beam = options.beam_size or (
        SEQUENTIAL_BEAM if options.condition_on_previous_text else beam_size
    )
    return JobSpec(
        job_id=job.id,
        path=Path(job.file_path),
        options=options.model_copy(update={"beam_size": beam}),
        model_id=entry.id,
        max_seconds=max_seconds,
        # VAD cuts the chunks at silences and keeps Whisper from inventing text
        # over them (F9); without it, chunks are plain 30 s slices.
        vad=options.vad_filter is not False,
        channels=channels,
        skip_chunks=job.chunks_done,
        from_s=job.processed_seconds if job.live else None,
        token=claim.token,
    )
