"""The bar the CLI draws on stderr while a job runs (``sona transcribe``,
``sona submit --wait``): tqdm, in percent of the audio, with the seconds done,
the queue position and an ETA. The daemon's own estimate (``eta_s``,
``eta_seconds`` or ``eta`` on the job, with ``queue_position``) is shown when
it sends one; otherwise the ETA comes from this job's rate since it started
processing, so time spent queued does not make the estimate look better or
worse than it is."""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from tqdm import tqdm

BAR_FORMAT = "{percentage:5.1f}%|{bar:30}| {desc}"


def describe(status: str, done_s: float, total_s: float | None, job: dict[str, Any]) -> str:
    """The words after the bar; ``job`` may carry the daemon's queue fields."""
    text = f"{status} {done_s:.1f}/{total_s:.1f} s" if total_s else status
    position = job.get("queue_position")
    if position is not None and status in ("queued", "processing"):
        text += f", queue position {position}"
    # The daemon's estimate, in seconds (or an ISO time, shown as it is).
    eta = next((job[k] for k in ("eta_s", "eta_seconds", "eta") if job.get(k) is not None), None)
    if isinstance(eta, int | float) and not isinstance(eta, bool):
        text += f", ETA {tqdm.format_interval(max(0.0, eta))}"
    elif isinstance(eta, str) and eta:
        text += f", ETA {eta}"
    return text


class JobBar:
    """One job's bar. ``update`` redraws at once: updates come at most every
    poll, so there is nothing to throttle."""

    def __init__(self, file: IO[str] | None = None):
        self._file = file or sys.stderr
        self._bar: tqdm | None = None  # drawn from the first update, with words after it
        self._processing_since: float | None = None

    def update(
        self, status: str, done_s: float, total_s: float | None, job: dict[str, Any] | None = None
    ) -> None:
        if status == "processing" and self._processing_since is None:
            self._processing_since = time.monotonic()  # the ETA counts processing time only
        if status == "completed":
            percent, done_s = 100.0, total_s or done_s
        else:
            percent = min(100.0, 100.0 * done_s / total_s) if total_s else 0.0
        desc = describe(status, done_s, total_s, job or {})
        if self._processing_since is not None and "ETA" not in desc and 0.0 < percent < 100.0:
            elapsed = time.monotonic() - self._processing_since
            desc += f", ETA {tqdm.format_interval(elapsed * (100.0 - percent) / percent)}"
        if self._bar is None:
            self._bar = tqdm(
                total=100.0, initial=percent, desc=desc, file=self._file, bar_format=BAR_FORMAT
            )
            return
        self._bar.n = percent
        self._bar.set_description_str(desc, refresh=False)
        self._bar.refresh()

    def update_from(self, job: dict[str, Any]) -> None:
        """From a job object of the HTTP API."""
        self.update(job["status"], job.get("processed_seconds") or 0.0, job.get("duration"), job)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
