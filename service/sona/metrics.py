"""Prometheus metrics (``GET /metrics``): the metric objects and tiny helpers.

Every metric lives on a ``Metrics`` instance with its own ``CollectorRegistry``,
never on prometheus-client's global one: two daemons in one process (the tests,
an embedding application) must not collide, and a test reads exactly the
numbers of the app it started. The runtime owns the instance
(``Runtime.metrics``); HTTP metrics are recorded by the access-log middleware,
job metrics by ``watch_jobs`` (a subscriber of the event hub, so the worker
needs no metrics code), and the gauges that mirror live state (queue depth,
loaded models, engine restarts, busy time, memory) are read at scrape time by
``Metrics.collect_live``.

Other modules record through the helpers here: the webhook dispatcher calls
``metrics.webhook_delivery(outcome)`` (``sona_webhook_deliveries_total{outcome}``)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sona.events import TERMINAL, EventHub
from sona.jobs import Job
from sona.store import JobStore

log = structlog.get_logger("sona")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
JOB_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600)
RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 5)


@dataclass(frozen=True)
class LiveState:
    """What ``collect_live`` reads at scrape time; plain numbers, filled by
    the caller from the runtime (this module knows no worker or engine)."""

    engine_restarts: int
    engine_pid: int | None
    busy_seconds: float
    steps: int
    uptime_seconds: float
    loaded_models: dict[str, float]  # model id → seconds its load took


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.started = time.monotonic()
        self.http_requests = Counter(
            "sona_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "sona_http_request_duration_seconds",
            "HTTP request latency, to the end of the response (streams included)",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.jobs = Counter(
            "sona_jobs_finished", "Jobs finished by outcome", ["outcome"], registry=r
        )
        self.job_seconds = Histogram(
            "sona_job_duration_seconds",
            "Wall time from start to finish of a job",
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self.audio_seconds = Counter(
            "sona_audio_seconds", "Seconds of audio in completed jobs", registry=r
        )
        self.realtime_factor = Histogram(
            "sona_job_realtime_factor",
            "Processing time / audio duration of completed jobs (below 1 is faster than real time)",
            buckets=RTF_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("sona_queue_depth", "Jobs waiting in the queue", registry=r)
        self.webhooks = Counter(
            "sona_webhook_deliveries",
            "Webhook delivery attempts by outcome",
            ["outcome"],
            registry=r,
        )
        self._live: Callable[[], LiveState] | None = None
        ProcessCollector(registry=r)  # process_resident_memory_bytes, CPU, open fds
        r.register(_LiveCollector(self))
        gpu = _gpu_collector()
        if gpu is not None:
            r.register(gpu)

    def bind_live(self, read: Callable[[], LiveState]) -> None:
        self._live = read

    def http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_latency.labels(method, route).observe(seconds)

    def job_finished(self, job: Job) -> None:
        self.jobs.labels(job.status.value).inc()
        if job.started_at is None or job.finished_at is None:
            return
        took = max(job.finished_at - job.started_at, 0.0)
        self.job_seconds.observe(took)
        if job.status.value == "completed" and job.duration:
            self.audio_seconds.inc(job.duration)
            self.realtime_factor.observe(took / job.duration)

    def webhook_delivery(self, outcome: str) -> None:
        """One webhook delivery attempt ended: ``delivered``, ``retrying``,
        ``disabled`` (410) or ``failed``."""
        self.webhooks.labels(outcome).inc()

    async def render(self, store: JobStore) -> bytes:
        self.queue_depth.set(await store.queue_size())
        return generate_latest(self.registry)

    def live(self) -> LiveState | None:
        return self._live() if self._live else None


class _LiveCollector(Collector):
    """Numbers the runtime keeps anyway, read when scraped."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return []  # unchecked: the families depend on what is running

    def collect(self) -> Iterable[Metric]:
        state = self._metrics.live()
        if state is None:
            return
        yield CounterMetricFamily(
            "sona_engine_restarts",
            "Engine child processes restarted after dying",
            state.engine_restarts,
        )
        yield CounterMetricFamily(
            "sona_engine_busy_seconds",
            "Seconds the engine spent in batch steps",
            state.busy_seconds,
        )
        yield CounterMetricFamily("sona_engine_steps", "Batch steps run by the engine", state.steps)
        ratio = state.busy_seconds / state.uptime_seconds if state.uptime_seconds > 0 else 0.0
        yield GaugeMetricFamily(
            "sona_worker_busy_ratio",
            "Share of uptime the engine spent in batch steps",
            min(ratio, 1.0),
        )
        loaded = GaugeMetricFamily("sona_model_loaded", "1 for each loaded model", labels=["model"])
        load_s = GaugeMetricFamily(
            "sona_model_load_seconds",
            "Seconds the last load of each loaded model took",
            labels=["model"],
        )
        for model, seconds in sorted(state.loaded_models.items()):
            loaded.add_metric([model], 1)
            load_s.add_metric([model], seconds)
        yield loaded
        yield load_s
        yield GaugeMetricFamily("sona_models_loaded", "Models loaded", len(state.loaded_models))
        rss = _rss_bytes(state.engine_pid)
        if rss is not None:
            yield GaugeMetricFamily(
                "sona_engine_resident_memory_bytes", "Resident memory of the engine child", rss
            )


def _rss_bytes(pid: int | None) -> int | None:
    """Resident memory of ``pid`` from /proc (Linux); None elsewhere or when gone."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class _GpuCollector(Collector):
    def __init__(self, nvml: object, count: int) -> None:
        self._nvml = nvml
        self._count = count

    def collect(self) -> Iterable[Metric]:
        nvml = self._nvml
        used = GaugeMetricFamily("sona_gpu_memory_used_bytes", "GPU memory in use", labels=["gpu"])
        total = GaugeMetricFamily(
            "sona_gpu_memory_total_bytes", "GPU memory in all", labels=["gpu"]
        )
        for i in range(self._count):
            info = nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(i))  # type: ignore[attr-defined]
            used.add_metric([str(i)], info.used)
            total.add_metric([str(i)], info.total)
        yield used
        yield total


def _gpu_collector() -> _GpuCollector | None:
    """GPU memory via NVML, with the optional ``gpu`` extra (nvidia-ml-py) and a
    GPU present; otherwise the GPU metrics are not exported at all."""
    try:
        import pynvml  # type: ignore[import-not-found, unused-ignore]

        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
    except Exception:  # no package, no driver, no GPU: nothing to export
        return None
    return _GpuCollector(pynvml, count) if count else None


async def watch_jobs(metrics: Metrics, store: JobStore, hub: EventHub) -> None:
    """Count every job that finishes in this process (runs until cancelled)."""
    with hub.subscribe_all() as inbox:
        while True:
            event = await inbox.get()
            if event.type not in TERMINAL:
                continue
            try:
                metrics.job_finished(await store.get(event.job_id))
            except asyncio.CancelledError:
                raise
            except Exception:  # a job deleted meanwhile: nothing to count
                log.debug("metrics.job_unreadable", job_id=event.job_id)
