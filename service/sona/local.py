"""``sona transcribe``: one file, no daemon, with a progress bar (sona.progress).
It runs the daemon's own runtime (engine process, batches, store) over a temporary data
directory, so a file transcribes the same way here as through the API."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from sona import queue
from sona.formats import render
from sona.intake import Submission
from sona.jobs import Job, Status, TranscribeOptions
from sona.progress import JobBar
from sona.remote import write_output
from sona.runtime import start_runtime
from sona.settings import Settings


async def _read(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as src:
        while chunk := await asyncio.to_thread(src.read, 1 << 20):
            yield chunk


async def _transcribe(args: argparse.Namespace, settings: Settings) -> tuple[Job, str]:
    options = TranscribeOptions(
        model=args.model,
        language=args.language,
        word_timestamps=args.word_timestamps,
        diarize=args.diarize,
    )
    with tempfile.TemporaryDirectory(prefix="sona-") as tmp:
        local = settings.model_copy(
            update={"data_dir": Path(tmp), "store": "", "model": None, "worker": True}
        )
        async with start_runtime(local) as rt:
            upload = await rt.uploads.save(
                _read(args.file),
                name=args.file.name,
                max_bytes=settings.max_upload_bytes,
                idle_timeout_s=settings.upload_idle_timeout_s,
            )
            job, _ = await queue.admit(rt, upload, Submission(options=options))
            bar = JobBar()
            try:
                job = await queue.wait(
                    rt,
                    job,
                    on_update=lambda j: bar.update(j.status, j.processed_seconds, j.duration),
                )
            finally:
                bar.close()
            body, _ = render(job, await rt.store.segments(job.id), args.format)
            return job, body


def transcribe_local(args: argparse.Namespace, settings: Settings) -> int:
    started = time.time()
    job, body = asyncio.run(_transcribe(args, settings))
    if job.status != Status.COMPLETED:
        print(f"sona: {job.error_code or job.status}: {job.error_message}", file=sys.stderr)
        return 1
    print(f"{job.duration or 0:.1f} s of audio in {time.time() - started:.1f} s", file=sys.stderr)
    asyncio.run(write_output(body, args.output))
    return 0
