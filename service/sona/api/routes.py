"""All routes, in one place to read."""

from __future__ import annotations

from aiohttp import web

from sona.api import (
    dashboard,
    feed,
    job_events,
    jobs,
    language,
    models,
    openai,
    openapi,
    ops,
    realtime,
    search,
    seed,
)


def setup(app: web.Application) -> None:
    for table in (
        ops.routes,
        jobs.routes,
        job_events.routes,
        seed.routes,
        models.routes,
        openai.routes,
        language.routes,
        realtime.routes,
        openapi.routes,
        feed.routes,
        search.routes,
        dashboard.routes,
    ):
        app.add_routes(table)
    feed.setup(app)
