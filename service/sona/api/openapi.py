"""``GET /openapi.json`` and ``GET /docs`` (C6).

The schemas come from the pydantic models that validate requests and shape
responses (``api/schemas.py``, ``OpenAIForm``, the transcripts'
``transcript_shapes``, which ``formats.render`` builds its bodies from); the
paths are the routes the app serves, each documented in
``api/route_docs.py``'s ``DOCS``; a served route without an entry fails the
build of the spec. ``tests/test_openapi.py`` checks real responses against the
schemas, so neither side can drift silently.

The feed's event shapes below are produced by ``api/feed.py``; the tests check
those bodies against these models."""

from __future__ import annotations

import copy
from http import HTTPStatus
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

from sona.api.middleware import OPEN_PATHS
from sona.api.openai_schemas import LanguageForm, LanguageOut, OpenAIForm
from sona.api.route_docs import DOCS, PATH_PARAMS, REF, Op, json_of
from sona.api.schemas import (
    ErrorBody,
    HealthOut,
    JobForm,
    JobList,
    JobOut,
    JobUrl,
    ModelDeletedOut,
    ModelListOut,
    ModelLoad,
    ModelOut,
    ModelsDeletedOut,
    ReadyOut,
    SeedJobOut,
    SeedStatusOut,
    WebhookList,
)
from sona.api.search_schemas import SearchList
from sona.errors import NotFound
from sona.transcript_shapes import TranscriptionOut, VerboseTranscriptionOut

routes = web.RouteTableDef()

STATIC = Path(__file__).resolve().parent.parent / "static"
# Served by name from this table only: nothing from the URL reaches a path (F7).
ASSETS = {"docs.js": "text/javascript", "docs.css": "text/css"}


class FeedStateOut(BaseModel):
    """The data of a `state` event of `GET /v1/events`."""

    models: list[ModelOut]
    queue_size: int
    processing: int
    worker_running: bool


class FeedSnapshotOut(BaseModel):
    """The data of a `snapshot` event of `GET /v1/events`."""

    jobs: list[JobOut]
    state: FeedStateOut
    last_event_id: str | None


SCHEMA_MODELS: tuple[type[BaseModel], ...] = (
    JobForm, JobUrl, JobOut, JobList, ErrorBody, ModelLoad, OpenAIForm, HealthOut, ReadyOut,
    ModelOut, ModelListOut, ModelDeletedOut, ModelsDeletedOut, SeedJobOut, SeedStatusOut,
    TranscriptionOut, VerboseTranscriptionOut, FeedStateOut, FeedSnapshotOut, WebhookList,
    LanguageForm, LanguageOut, SearchList,
)  # fmt: skip
FORMS = {"JobForm", "OpenAIForm", "LanguageForm"}  # multipart: the schema gains the file part


def schemas() -> dict[str, Any]:
    """Component schemas: every model in ``SCHEMA_MODELS`` and its ``$defs``."""
    out: dict[str, Any] = {}
    for model in SCHEMA_MODELS:
        mode: Literal["validation", "serialization"] = (
            "validation"
            if model in (JobForm, JobUrl, ModelLoad, OpenAIForm, LanguageForm)
            else "serialization"
        )
        schema = model.model_json_schema(ref_template=REF, mode=mode)
        out.update(schema.pop("$defs", {}))
        if model.__name__ in FORMS:
            schema["properties"] = {
                name: _form_field(prop) for name, prop in schema["properties"].items()
            }
            schema["properties"] = {
                "file": {"type": "string", "format": "binary", "description": "the audio"},
                **schema["properties"],
            }
            schema["required"] = ["file", *schema.get("required", [])]
        out[model.__name__] = schema
    return out


# How pydantic reads a boolean sent as text (forms carry only text).
BOOL_TEXT = ["true", "false", "1", "0", "yes", "no", "on", "off", "t", "f", "y", "n"]


def _form_field(prop: dict[str, Any]) -> dict[str, Any]:
    """A multipart field's real schema: text, never JSON null (``X | None``
    becomes ``X``); a boolean also in pydantic's text spellings; and an empty
    value, which means the field's default."""
    options = [o for o in prop.pop("anyOf", []) if o.get("type") != "null"]
    if len(options) == 1:
        prop.update(options[0])
    elif options:
        prop["anyOf"] = options
    if prop.get("default", 0) is None:
        del prop["default"]
    if prop.get("type") == "boolean":
        prop = {**prop, "type": ["boolean", "string"], "enum": [True, False, *BOOL_TEXT]}
    return {"anyOf": [prop, {"const": ""}], "description": "empty: the default"}


def _operation(method: str, path: str, op: Op) -> dict[str, Any]:
    params = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": PATH_PARAMS.get(name, {"type": "string", "minLength": 1}),
        }
        for name in _path_params(path)
    ]
    params += [
        {
            "name": name,
            "in": where,
            "required": name in op.required,
            "schema": schema,
            "description": doc,
        }
        for where, table in (("query", op.query), ("header", op.headers))
        for name, schema, doc in table
    ]
    responses: dict[str, Any] = {}
    for status, content in op.responses.items():
        responses[str(status)] = _response(status, content)
    errors = op.errors if path in OPEN_PATHS else (*op.errors, 401)
    for status in sorted(set(errors)):
        responses[str(status)] = _response(status, json_of("ErrorBody"))
    out: dict[str, Any] = {
        "tags": [op.tag],
        "summary": op.summary,
        "operationId": f"{method.lower()}{_camel(path)}",
        "responses": responses,
    }
    if op.description:
        out["description"] = op.description
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {"required": True, "content": op.body}
    if path in OPEN_PATHS:
        out["security"] = []
    return out


def _response(status: int, content: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"description": HTTPStatus(status).phrase}
    if content:
        out["content"] = copy.deepcopy(content)
    return out


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def _camel(path: str) -> str:
    words = path.replace("{", "by_").replace("}", "").replace(".", "_").replace("/", "_")
    return "".join(w.capitalize() for w in words.split("_") if w)


def served(router: web.UrlDispatcher) -> list[tuple[str, str]]:
    """(method, path) of every route the app serves, in the order of ``DOCS``.
    ``KeyError`` names a route that has no documentation."""
    routes = {
        (route.method, route.resource.canonical)
        for route in router.routes()
        if route.method != "HEAD" and route.resource is not None  # HEAD: aiohttp's own twin
    }
    missing = routes - DOCS.keys()
    if missing:
        raise KeyError(f"routes without an entry in api/route_docs.py's DOCS: {sorted(missing)}")
    return [key for key in DOCS if key in routes]


def build_spec(router: web.UrlDispatcher) -> dict[str, Any]:
    """The OpenAPI 3.1 document for every route ``router`` serves."""
    paths: dict[str, dict[str, Any]] = {}
    routes = served(router)
    for method, path in routes:
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, DOCS[method, path])
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Sona",
            "version": _version(),
            "description": "Self-hosted transcription daemon: a durable job queue and "
            "an OpenAI-compatible speech-to-text API. Errors use OpenAI's shape.",
        },
        "tags": [{"name": t} for t in dict.fromkeys(DOCS[key].tag for key in routes)],
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        # The empty requirement: keys are optional, only needed when configured (F4).
        "security": [{}, {"bearer": []}],
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sona")
    except PackageNotFoundError:
        return "0"


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(build_spec(request.app.router))


# The page runs only our own script and style; the policy keeps it that way.
CSP = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'"


@routes.get("/docs")
async def docs(request: web.Request) -> web.FileResponse:
    return web.FileResponse(
        STATIC / "docs.html",
        headers={"Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": CSP},
    )


@routes.get("/docs/{asset}")
async def docs_asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["asset"]
    if name not in ASSETS:
        raise NotFound(f"no asset {name!r}", param="asset")
    return web.FileResponse(STATIC / name, headers={"Content-Type": ASSETS[name]})
