"""``sona transcribe``: one file, in this process, with a progress bar. The same
pipeline the worker runs, without the queue."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from service.engine.registry import ModelRegistry
from service.engine.whisper import WhisperEngine
from service.formats import render
from service.jobs import Job, Segment, Status, TranscribeOptions
from service.pipeline import Limits, transcribe_file
from service.settings import Settings

BAR = 30


def _bar(done: float, total: float) -> None:
    frac = min(1.0, done / total) if total else 0.0
    fill = int(frac * BAR)
    print(
        f"\r[{'#' * fill}{'.' * (BAR - fill)}] {frac * 100:5.1f}%  {done:6.1f}/{total:.1f} s",
        end="",
        file=sys.stderr,
        flush=True,
    )


def transcribe_local(args: argparse.Namespace) -> int:
    import asyncio

    settings = Settings()
    registry = ModelRegistry(
        WhisperEngine(device=settings.device, compute_type=settings.compute_type),
        model_dir=settings.model_dir or settings.data_dir / "models",
        allow_download=settings.allow_download,
        max_loaded=1,
    )
    name = args.model or settings.default_model or "tiny.en"
    entry = asyncio.run(registry.load(name))
    options = TranscribeOptions(
        model=entry.id,
        language=args.language,
        word_timestamps=args.word_timestamps,
        diarize=args.diarize,
    )
    segments: list[Segment] = []
    total = 0.0

    def on_duration(d: float) -> None:
        nonlocal total
        total = d

    def on_segment(seg: Segment, processed: float) -> None:
        segments.append(seg)
        _bar(processed, total)

    started = time.time()
    info = transcribe_file(
        entry.model,
        args.file,
        options,
        Limits(settings.max_audio_seconds, settings.vad_min_seconds),
        on_duration=on_duration,
        on_segment=on_segment,
        should_stop=lambda: False,
    )
    _bar(total, total)
    print(f"\n{info.duration:.1f} s of audio in {time.time() - started:.1f} s", file=sys.stderr)
    segments.sort(key=lambda s: (s.start, s.index))
    job = Job(
        id="local",
        status=Status.COMPLETED,
        options=options,
        model=entry.id,
        priority=0,
        file_path=str(args.file),
        file_name=Path(args.file).name,
        file_sha256="",
        file_size=0,
        created_at=started,
        duration=info.duration,
        language=info.language,
    )
    body, _ = render(job, segments, args.format)
    if args.output:
        args.output.write_text(body, encoding="utf-8")
    else:
        sys.stdout.write(body)
    return 0
