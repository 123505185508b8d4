"""Liveness, readiness (B4) and Prometheus metrics."""

from __future__ import annotations

from aiohttp import web

from sona.api.schemas import BatchStatsOut, EngineOut, HealthOut, ReadyOut, json_model
from sona.keys import ENGINE, METRICS, MODELS, STORE, WORKER
from sona.metrics import CONTENT_TYPE

routes = web.RouteTableDef()


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    """Liveness: 503 once the worker has stopped on its own (a restart is the cure);
    a worker retrying after store errors is alive, and says so."""
    app = request.app
    worker = app[WORKER]
    state = worker.state if worker is not None else None  # None: an API node
    alive = state != "stopped"
    try:
        queue: int | None = await app[STORE].queue_size()
    except Exception:  # a store that cannot be read is reported, not a 500
        queue = None
    body = HealthOut(
        status="ok" if alive else "unhealthy",
        model_loaded=bool(app[MODELS].entries()),
        queue_size=queue,
        worker=state,
    )
    return json_model(body, status=200 if alive else 503)


@routes.get("/ready")
async def ready(request: web.Request) -> web.Response:
    app = request.app
    worker, engine = app[WORKER], app[ENGINE]
    if worker is None or engine is None:
        # An API node: ready when its store answers (health above raises if not);
        # the workers report on their own probe ports.
        await app[STORE].queue_size()
        return json_model(ReadyOut(status="ready", role="api", worker_running=False))
    models = [e.id for e in app[MODELS].entries()]
    running = worker.state == "running"  # not while retrying: its store is failing
    silent = engine.silent_s  # a stopped or wedged engine process
    reason = _not_ready(models, worker.state, silent)
    ok = reason is None
    body = ReadyOut(
        status="ready" if ok else "not_ready",
        role="api+worker",
        reason=reason,
        models=models,
        worker_running=running,
        worker=worker.state,
        engine=EngineOut(pid=engine.pid, restarts=engine.restarts, silent_s=silent),
        jobs_in_flight=len(worker.flights),
        batches=BatchStatsOut.model_validate(worker.stats, from_attributes=True),
    )
    return json_model(body, status=200 if ok else 503)


def _not_ready(models: list[str], worker: str, silent_s: float | None) -> str | None:
    """Why a worker node is not ready; None when it is."""
    if not models:
        return "no model loaded"
    if worker != "running":
        return f"worker {worker}"
    if silent_s is not None:
        return f"engine not answering for {silent_s:.0f} s"
    return None


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    body = await request.app[METRICS].render(request.app[STORE])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
