"""Models at runtime (B6): list, load, unload."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.api.forms import read_json
from service.api.schemas import ModelLoad
from service.engine.registry import ModelEntry
from service.errors import InvalidRequest
from service.keys import MODELS

routes = web.RouteTableDef()


def model_out(entry: ModelEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "object": "model",
        "created": int(entry.loaded_at),
        "owned_by": "sona",
        "path": str(entry.path),
        "load_seconds": round(entry.load_seconds, 3),
        "in_use": entry.in_use > 0,
    }


@routes.get("/v1/models")
async def list_models(request: web.Request) -> web.Response:
    data = [model_out(e) for e in request.app[MODELS].entries()]
    return web.json_response({"object": "list", "data": data})


@routes.post("/v1/models/load")
async def load_model(request: web.Request) -> web.Response:
    req = await read_json(request, ModelLoad, '{"model": NAME} or {"path": DIR}')
    name = req.path or req.model
    if not name:
        raise InvalidRequest('give "model" (a name) or "path" (a directory)', param="model")
    entry = await request.app[MODELS].load(name)
    return web.json_response(model_out(entry))


@routes.delete("/v1/models/{model_id:.+}")
async def unload_model(request: web.Request) -> web.Response:
    model_id = request.match_info["model_id"]
    unloaded = await request.app[MODELS].unload(model_id)
    return web.json_response({"id": model_id, "object": "model", "deleted": unloaded})


@routes.delete("/v1/models")
async def unload_all(request: web.Request) -> web.Response:
    ids = await request.app[MODELS].unload_all()
    return web.json_response({"object": "list", "deleted": ids})
