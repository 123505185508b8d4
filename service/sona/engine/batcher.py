"""Which chunks form the next batch (A10, C4). Pure: no I/O, no clock.

Every chunk cut from every job in flight waits in one ``Pool``. The next batch
starts from the most urgent chunk — highest priority, then the job served
longest ago (never served first), then the oldest job, then the job's own
order — and takes chunks from the jobs of that priority whose options can
share a forward pass with it (``batch_key``), **one chunk per job per turn**
(fair share): a short job behind a long one gets a row in the next step
instead of waiting for the long job's chunks to drain, and a job alone still
fills every row. A job's first step holds only jobs never served yet: a step
costs about what its windows do on a CPU, so a clip padded with a long job's
chunks would wait for all of them (its first segments and, for a clip, its
whole transcript); the long job's rows wait for that one short step. Same
priority only, for the same reason: an interactive request's batch is its
own. A job's chunks always leave in their own order, so its segments are
stored in order. A suspect's chunk (its job crashed the engine before) leaves
alone, one to a batch, and never beside another job's: should the engine die
again, the blame is the suspect's only."""

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
    age: float  # the job's creation time: older goes first among equals
    suspect: bool = False  # its job crashed the engine before: batched with nobody


def compatible(head: Pending, other: Pending) -> bool:
    """May ``other`` share the batch that starts from ``head``. A suspect's
    chunk goes alone, beside nobody's (not even its own job's next chunk)."""
    if head.suspect or other.suspect:
        return other is head
    return other.key == head.key and other.priority == head.priority


class Pool:
    """The chunks waiting for a batch, from every job in flight, and when each
    job last had a row (the fair share's memory)."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, int], Pending] = {}
        self._served: dict[str, int] = {}  # job id → the turn it last had a row
        self._turns = 0  # rows handed out, all told

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: Pending) -> None:
        self._items[(item.chunk.job_id, item.chunk.no)] = item

    def drop_job(self, job_id: str) -> None:
        for key in [k for k in self._items if k[0] == job_id]:
            del self._items[key]
        self._served.pop(job_id, None)

    def _rank(self, p: Pending) -> tuple[int, int, float, str, int]:
        """Priority, then the job served longest ago (-1: never), then age."""
        return (
            -p.priority,
            self._served.get(p.chunk.job_id, -1),
            p.age,
            p.chunk.job_id,
            p.chunk.no,
        )

    def take_batch(self, size: int, window_s: float) -> list[Pending]:
        """Remove and return the next batch: as many chunks as ``pack`` fits in
        ``size`` windows (empty when the pool is), grouped by job so that a
        job's chunks can share windows. A batch led by a job never served
        holds only such jobs: their first step is their own size."""
        ordered = sorted(self._items.values(), key=self._rank)
        if not ordered:
            return []
        head = ordered[0]
        fresh = head.chunk.job_id not in self._served
        queues: dict[str, list[Pending]] = {}  # per job, in rank order, each in its own order
        for p in ordered:
            if compatible(head, p) and not (fresh and p.chunk.job_id in self._served):
                queues.setdefault(p.chunk.job_id, []).append(p)
        batch = fill(list(queues.values()), size, window_s)
        for p in batch:  # in the batch's job order, so ties keep their turn
            del self._items[(p.chunk.job_id, p.chunk.no)]
            self._turns += 1
            self._served[p.chunk.job_id] = self._turns
        return batch


def fill(queues: list[list[Pending]], size: int, window_s: float) -> list[Pending]:
    """Round-robin over the jobs' queues: each job's next chunk in turn while
    the batch still packs into ``size`` windows. A job whose next chunk does
    not fit is done for this batch (its later chunks must not overtake it).
    The batch comes back grouped: job by job, in the queues' order."""
    taken: list[list[Pending]] = [[] for _ in queues]
    live = [n for n, q in enumerate(queues) if q]
    while live:
        still = []
        for n in live:
            nxt = queues[n][len(taken[n])]
            trial = [[*group, nxt] if m == n else group for m, group in enumerate(taken)]
            if _windows(trial, window_s) > size:
                continue
            taken[n].append(nxt)
            if len(taken[n]) < len(queues[n]):
                still.append(n)
        live = still
    return [p for group in taken for p in group]


def _windows(groups: list[list[Pending]], window_s: float) -> int:
    return len(pack([owner(p.chunk, p.chunk.seconds) for g in groups for p in g], window_s))
