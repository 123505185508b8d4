"""Liveness and readiness (B4)."""

from __future__ import annotations

from dataclasses import asdict

from aiohttp import web

from service.keys import ENGINE, MODELS, STORE, WORKER

routes = web.RouteTableDef()


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    """Liveness: 503 once the worker has stopped on its own (a restart is the cure);
    a worker retrying after store errors is alive, and says so."""
    app = request.app
    worker = app[WORKER].state
    alive = worker != "stopped"
    try:
        queue: int | None = await app[STORE].queue_size()
    except Exception:  # a store that cannot be read is reported, not a 500
        queue = None
    return web.json_response(
        {
            "status": "ok" if alive else "unhealthy",
            "model_loaded": bool(app[MODELS].entries()),
            "queue_size": queue,
            "worker": worker,
        },
        status=200 if alive else 503,
    )


@routes.get("/ready")
async def ready(request: web.Request) -> web.Response:
    app = request.app
    models = [e.id for e in app[MODELS].entries()]
    worker = app[WORKER].state
    running = worker == "running"  # not while retrying: its store is failing
    ok = bool(models) and running
    engine = app[ENGINE]
    return web.json_response(
        {
            "status": "ready" if ok else "not_ready",
            "models": models,
            "worker_running": running,
            "worker": worker,
            "engine": {"pid": engine.pid, "restarts": engine.restarts},
            "jobs_in_flight": len(app[WORKER].flights),
            "batches": asdict(app[WORKER].stats),
        },
        status=200 if ok else 503,
    )
