"""A worker node (``sona worker``): the runtime with its engine and worker and
no API, taking jobs from a store it shares with API nodes and other workers
(docs/scaling.md). An optional port answers ``GET /health`` and ``GET /metrics`` for probes and
scrapers."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import structlog
from aiohttp import web

from sona import loop_errors
from sona.api.middleware import end_json_with_newline
from sona.metrics import CONTENT_TYPE
from sona.runtime import Runtime, start_runtime
from sona.settings import Settings
from sona.signals import stop_on_signals

log = structlog.get_logger("sona")
RUNTIME = web.AppKey("runtime", Runtime)


async def _health(request: web.Request) -> web.Response:
    """200 while the worker runs and the store answers, else 503."""
    rt = request.app[RUNTIME]
    worker = rt.worker
    body: dict[str, Any] = {"role": "worker", "worker_running": bool(worker and worker.running)}
    try:
        body["queue_size"] = await rt.store.queue_size()
    except Exception as exc:  # a probe reports a broken store, it does not crash on it
        body["store_error"] = type(exc).__name__
    if worker is not None:
        body["worker_id"] = worker.worker_id
        body["jobs_in_flight"] = len(worker.flights)
        body["models"] = [e.id for e in rt.models.entries()]
    ok = body["worker_running"] and "store_error" not in body
    body["status"] = "ok" if ok else "unhealthy"
    return web.json_response(body, status=200 if ok else 503)


async def _metrics(request: web.Request) -> web.Response:
    """This node's own metrics: its jobs, engine and memory (docs/operations.md)."""
    rt = request.app[RUNTIME]
    return web.Response(
        body=await rt.metrics.render(rt.store), headers={"Content-Type": CONTENT_TYPE}
    )


async def _probe(rt: Runtime, host: str, port: int) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app[RUNTIME] = rt
    app.on_response_prepare.append(end_json_with_newline)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner, runner.addresses[0][1]


async def run_worker_node(settings: Settings, *, probe_port: int | None) -> int:
    """Work until SIGTERM/SIGINT, then drain (jobs still running after the drain
    timeout go back to the queue for another worker); returns the exit code."""
    settings = settings.model_copy(update={"data_dir": settings.data_dir.resolve()})
    stop = stop_on_signals("worker")
    loop_errors.install(asyncio.get_running_loop())
    async with start_runtime(settings) as rt:
        assert rt.worker is not None  # settings.worker is on: start_runtime made one
        runner, port = None, None
        if probe_port is not None:
            runner, port = await _probe(rt, settings.host, probe_port)
        if settings.pidfile:
            settings.pidfile.write_text(f"{os.getpid()}\n")
        line = {"status": "ready", "role": "worker", "worker_id": rt.worker.worker_id, "port": port}
        print(json.dumps(line, separators=(",", ":")), flush=True)
        log.info("worker.ready", **line)
        await stop.wait()
        await rt.drain()
        if runner is not None:
            await runner.cleanup()
    if settings.pidfile:
        settings.pidfile.unlink(missing_ok=True)
    log.info("worker.stopped")
    return 0
