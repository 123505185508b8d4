"""All routes, in one place to read."""

from __future__ import annotations

from aiohttp import web

from service.api import jobs, models, openai, ops, seed


def setup(app: web.Application) -> None:
    for table in (ops.routes, jobs.routes, seed.routes, models.routes, openai.routes):
        app.add_routes(table)
