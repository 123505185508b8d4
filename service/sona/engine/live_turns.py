"""Live sessions' turns in the engine process (``engine/child.py``): the turns
waiting when an inference thread is free are taken together, and decoded as
one batch (a row per chunk of speech), before any job's step.

Many sessions end their turns at about the same time (people pause at
sentence ends, tests and benchmarks stream alike); one batch of all of them
costs little more than one of them, where one after another would make the
last wait for all the others."""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Any

from sona.engine import Engine
from sona.engine.chunker import Chunker, RawChunk
from sona.engine.messages import Transcribe
from sona.jobs import Segment

MAX_TURNS = 16  # in one batch
Result = tuple[str | None, list[Segment]]


def take_turns(first: Transcribe, pending: queue.PriorityQueue[Any]) -> list[Transcribe]:
    """``first`` and the turns queued behind it that can share its batch (same
    model and options); the rest goes back where it was (the queue's order is
    (priority, arrival), so putting an item back keeps its place)."""
    turns, back = [first], []
    while len(turns) < MAX_TURNS:
        try:
            item = pending.get_nowait()
        except queue.Empty:
            break
        work = item[2]
        if isinstance(work, Transcribe) and (work.model_id, work.options) == (
            first.model_id,
            first.options,
        ):
            turns.append(work)
            continue
        back.append(item)
        if not isinstance(work, Transcribe):
            break  # steps come after every turn
    for item in back:
        pending.put(item)
    return turns


def transcribe_turns(
    backend: Engine, detector: Callable[[], Chunker], turns: list[Transcribe], *, fit: bool
) -> list[Result]:
    """Each turn cut into chunks of speech as a job's file is (so a turn and a
    file of the same audio decode alike), every chunk a row of one batch per
    language; segments timed from their turn's start. A turn without speech:
    (None, []). ``fit`` (the engine's ``fit_windows``): the encoder reads the
    turns' length, not 30 s — the most of a short turn's decode otherwise."""
    first = turns[0]
    cut: list[list[RawChunk]] = []
    for turn in turns:
        chunker = detector()
        cut.append([*chunker.feed(turn.audio), *chunker.finish()])
    languages: list[str | None] = []
    for chunks in cut:  # asked for, else detected; an English-only model refuses another
        found = backend.language(first.model_id, first.options, chunks[0].audio) if chunks else None
        languages.append(found[0] if found else None)
    results: list[Result] = [(None, []) for _ in turns]
    for language in {lang for lang in languages if lang is not None}:
        mine = [n for n, lang in enumerate(languages) if lang == language]
        rows = [[chunk] for n in mine for chunk in cut[n]]
        decoded = iter(backend.decode(first.model_id, first.options, language, rows, fit=fit))
        for n in mine:
            segments = [s for _ in cut[n] for s in next(decoded)[0]]
            results[n] = (language, segments)
    return results
