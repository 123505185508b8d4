"""Models at runtime (B6): list, show, load, unload. OpenAI clients' model names
(``whisper-1``…) are listed as aliases of the model they run on, so
``client.models.list()`` and ``.retrieve("whisper-1")`` work."""

from __future__ import annotations

from aiohttp import web

from sona.api.forms import read_json
from sona.api.schemas import (
    ModelDeletedOut,
    ModelListOut,
    ModelLoad,
    ModelOut,
    ModelsDeletedOut,
    json_model,
    model_out,
)
from sona.engine.registry import OPENAI_ALIASES
from sona.errors import InvalidRequest, ModelNotFound, NoModel
from sona.keys import INTAKE, MODELS

routes = web.RouteTableDef()


def _aliases(app: web.Application) -> list[ModelOut]:
    """The OpenAI names, each pointing at the model a request naming it runs on;
    none when that is nothing (no default model and none loaded)."""
    try:
        target = app[INTAKE].resolve_model(None)
    except NoModel:
        return []
    loaded = {e.id: e for e in app[MODELS].entries()}
    created = int(loaded[target].loaded_at) if target in loaded else 0
    return [
        ModelOut(id=name, created=created, loaded=target in loaded, alias_for=target)
        for name in sorted(OPENAI_ALIASES)
    ]


@routes.get("/v1/models")
async def list_models(request: web.Request) -> web.Response:
    loaded = [model_out(e) for e in request.app[MODELS].entries()]
    return json_model(ModelListOut(data=loaded + _aliases(request.app)))


# Any id but "load", so that /v1/models/load answers 405 with "Allow: POST" alone.
@routes.get(r"/v1/models/{model_id:(?!load$).+}")
async def get_model(request: web.Request) -> web.Response:
    model_id = request.match_info["model_id"]
    found = [e for e in request.app[MODELS].entries() if e.id == model_id]
    if found:
        return json_model(model_out(found[0]))
    for alias in _aliases(request.app):
        if alias.id == model_id:
            return json_model(alias)
    raise ModelNotFound(f"model {model_id!r} is not loaded", param="model")


@routes.post("/v1/models/load")
async def load_model(request: web.Request) -> web.Response:
    req = await read_json(request, ModelLoad, '{"model": NAME} or {"path": DIR}')
    name = req.path or req.model
    if not name:
        raise InvalidRequest('give "model" (a name) or "path" (a directory)', param="model")
    entry = await request.app[MODELS].load(name)
    return json_model(model_out(entry))


@routes.delete(r"/v1/models/{model_id:(?!load$).+}")
async def unload_model(request: web.Request) -> web.Response:
    model_id = request.match_info["model_id"]
    unloaded = await request.app[MODELS].unload(model_id)
    return json_model(ModelDeletedOut(id=model_id, deleted=unloaded))


@routes.delete("/v1/models")
async def unload_all(request: web.Request) -> web.Response:
    return json_model(ModelsDeletedOut(deleted=await request.app[MODELS].unload_all()))
