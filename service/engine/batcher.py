"""Which chunks form the next batch (A10, C4). Pure: no I/O, no clock.

Every chunk cut from every job in flight waits in one ``Pool``. The next batch
starts from the most urgent chunk — highest priority, then the oldest job,
then the job's own order — and takes more chunks in that same order from
jobs of the same priority whose options can share a forward pass with it
(``batch_key``). Same priority only: on a CPU a batch costs about what its
chunks cost one by one, so an interactive request padded with a long job's
chunks would wait for all of them. A job's chunks always leave in their own
order, so its segments are stored in order. A suspect's chunk (its job crashed
the engine before) leaves alone, one to a batch, and never beside another
job's: should the engine die again, the blame is the suspect's only."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from sona.engine import ChunkInfo
from sona.jobs import TranscribeOptions


def batch_key(model_id: str, options: TranscribeOptions, language: str, job_id: str) -> Hashable:
    """Chunks with equal keys may share a batch: one model, one prompt, one
    tokenizer (task and language), one decoding setup. A job decoded
    sequentially shares with nobody."""
    return (
        job_id if options.condition_on_previous_text else None,
        model_id,
        options.task,
        language,
        options.prompt,
        options.hotwords,
        options.word_timestamps,
        options.beam_size,
        options.temperature,
    )


PACK_GAP_S = 1.0  # silence between chunks that share a window


def owner(chunk: ChunkInfo, seconds: float) -> tuple[Hashable, float]:
    """``pack``'s view of a chunk: whose it is (a job's channel) and how long."""
    return (chunk.job_id, chunk.channel), seconds


def pack(chunks: Sequence[tuple[Hashable, float]], window_s: float) -> list[list[int]]:
    """Windows for ``(owner, seconds)`` chunks, in order: a chunk joins the
    window before it while it has the same owner (one job's channel) and their
    speech, a gap of silence apart, fits ``window_s``. The encoder's cost is per
    window, so a job's short chunks are cheaper together. Never across owners:
    the decoder can merge or shift words over the gap (seen with identical
    clips), which would put one job's words into another's transcript."""
    rows: list[list[int]] = []
    used = 0.0
    last: Hashable = None
    for n, (owner, length) in enumerate(chunks):
        if rows and owner == last and used + PACK_GAP_S + length <= window_s:
            rows[-1].append(n)
            used += PACK_GAP_S + length
        else:
            rows.append([n])
            used = length
        last = owner
    return rows


@dataclass(frozen=True)
class Pending:
    chunk: ChunkInfo
    key: Hashable
    priority: int
    age: float  # the job's creation time: older goes first
    suspect: bool = False  # its job crashed the engine before: batched with nobody

    @property
    def order(self) -> tuple[int, float, str, int]:
        return (-self.priority, self.age, self.chunk.job_id, self.chunk.no)


class Pool:
    """The chunks waiting for a batch, from every job in flight."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, int], Pending] = {}

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: Pending) -> None:
        self._items[(item.chunk.job_id, item.chunk.no)] = item

    def drop_job(self, job_id: str) -> None:
        for key in [k for k in self._items if k[0] == job_id]:
            del self._items[key]

    def take_batch(self, size: int, window_s: float) -> list[Pending]:
        """Remove and return the next batch: as many chunks as ``pack`` fits in
        ``size`` windows (empty when the pool is)."""
        ordered = sorted(self._items.values(), key=lambda p: p.order)
        if not ordered:
            return []
        head = ordered[0]
        batch: list[Pending] = []
        for p in ordered:
            if p.key != head.key or p.priority != head.priority:
                continue
            if (p.suspect or head.suspect) and p is not head:
                continue  # a suspect's chunk goes alone, beside nobody's
            if len(pack([owner(q.chunk, q.chunk.seconds) for q in (*batch, p)], window_s)) > size:
                break
            batch.append(p)
        for p in batch:
            del self._items[(p.chunk.job_id, p.chunk.no)]
        return batch
