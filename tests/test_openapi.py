"""/openapi.json and /docs (C6): the spec covers every route, is valid OpenAPI
3.1, describes what the handlers really send, and the page needs no network."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from sona.api.openapi import build_spec
from sona.api.route_docs import DOCS
from sona.api.routes import setup as setup_routes
from sona.jobs import LANGUAGES, Segment, Status
from sona.keys import STORE
from tests.helpers import audio_form, idle_app, submit


async def fetch_spec(client: TestClient[web.Request, web.Application]) -> dict[str, Any]:
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    return await resp.json()


def conforms(spec: dict[str, Any], schema: str, body: Any) -> None:
    """Validate ``body`` against a component schema of ``spec`` (refs resolve
    inside the spec document)."""
    root = {"$ref": f"#/components/schemas/{schema}", "components": spec["components"]}
    Draft202012Validator(root).validate(body)


async def test_every_registered_route_is_in_the_spec_and_nothing_else(
    aiohttp_client: Any, make_settings: Any
) -> None:
    client = await idle_app(aiohttp_client, make_settings)
    spec = await fetch_spec(client)
    registered = {
        (route.method.lower(), route.resource.canonical)
        for route in client.app.router.routes()
        if route.method != "HEAD" and route.resource is not None  # HEAD: aiohttp's automatic twin
    }
    documented = {(method, path) for path, item in spec["paths"].items() for method in item}
    assert registered - documented == set(), "routes missing from api/route_docs.py"
    assert documented - registered == set(), "operations documented but not registered"
    stale = {(m.lower(), p) for m, p in DOCS} - registered
    assert stale == set(), "DOCS entries for routes the app does not serve"


def test_a_route_without_documentation_fails_the_spec() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    setup_routes(app)
    app.router.add_get("/v1/undocumented", handler)
    with pytest.raises(KeyError, match="/v1/undocumented"):
        build_spec(app.router)


async def test_spec_is_valid_openapi_3_1_built_from_the_pydantic_models(
    aiohttp_client: Any, make_settings: Any
) -> None:
    client = await idle_app(aiohttp_client, make_settings)
    spec = await fetch_spec(client)
    validate(spec)
    assert spec["openapi"] == "3.1.0"
    schemas = spec["components"]["schemas"]
    assert {"JobForm", "JobOut", "JobList", "ErrorBody", "ModelLoad", "OpenAIForm"} <= set(schemas)
    assert schemas["JobForm"]["required"] == ["file"]
    # A form field is its type, or empty text meaning "the default".
    form = {k: v["anyOf"][0] for k, v in schemas["JobForm"]["properties"].items() if k != "file"}
    assert all(v["anyOf"][1] == {"const": ""} for k, v in schemas["JobForm"]["properties"].items()
               if k != "file")  # fmt: skip
    assert form["task"]["enum"] == ["transcribe", "translate"]
    assert form["job_id"]["pattern"] == "^[A-Za-z0-9_-]{1,64}$"
    assert form["language"]["enum"] == sorted(LANGUAGES)  # Whisper's codes
    assert form["priority"]["minimum"] == -1000 and form["priority"]["maximum"] == 1000
    assert "null" not in str(form)  # a multipart field is never JSON null
    openai_form = {k: v["anyOf"][0] for k, v in schemas["OpenAIForm"]["properties"].items()
                   if k != "file"}  # fmt: skip
    assert openai_form["response_format"]["enum"] == ["json", "text", "srt", "verbose_json", "vtt"]
    assert openai_form["timestamp_granularities[]"]["items"]["enum"] == ["word", "segment"]
    assert {"beam_size", "vad_filter", "hotwords", "diarize", "stream"} <= set(openai_form)
    assert schemas["ModelLoad"]["anyOf"][0]["required"] == ["model"]
    job_param = spec["paths"]["/v1/jobs/{job_id}"]["get"]["parameters"][0]
    assert job_param["schema"]["pattern"] == "^[A-Za-z0-9_-]{1,64}$"
    for path, item in spec["paths"].items():
        for method, op in item.items():
            for status, response in op["responses"].items():
                # The probes' 503 is their own body; a 416 carries the file's type, no body.
                own = (path, status) in (
                    ("/ready", "503"),
                    ("/health", "503"),
                    ("/v1/jobs/{job_id}/audio", "416"),
                )
                if status.startswith(("4", "5")) and not own:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path)


async def test_real_responses_match_their_schemas(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    client = await idle_app(aiohttp_client, make_settings)
    spec = await fetch_spec(client)

    async def body(method: str, url: str, status: int, **kw: Any) -> Any:
        resp = await client.request(method, url, **kw)
        assert resp.status == status, await resp.text()
        return await resp.json()

    conforms(spec, "HealthOut", await body("GET", "/health", 200))
    conforms(spec, "ReadyOut", await body("GET", "/ready", 503))
    conforms(spec, "ModelListOut", await body("GET", "/v1/models", 200))
    conforms(spec, "ModelOut", await body("GET", "/v1/models/whisper-1", 200))
    conforms(spec, "ModelDeletedOut", await body("DELETE", "/v1/models/tiny.en", 200))
    conforms(spec, "ModelsDeletedOut", await body("DELETE", "/v1/models", 200))
    conforms(spec, "ErrorBody", await body("GET", "/v1/jobs/nope", 404))
    job = await submit(client, fox_wav, metadata='{"k": 1}')
    conforms(spec, "JobOut", job)
    conforms(spec, "JobList", await body("GET", "/v1/jobs", 200))
    seed = await body("POST", "/transcribe", 200, data=audio_form(fox_wav))
    conforms(spec, "SeedJobOut", seed)
    conforms(spec, "SeedStatusOut", await body("GET", f"/status/{seed['job_id']}", 200))

    # Finish a job by hand (as a worker would) to check the transcript shapes.
    store = client.app[STORE]
    claim = await store.claim(worker_id="test:1:x", prefer_models=[], lease_s=60)
    assert claim is not None and claim.job.id == job["id"]
    await store.set_info(claim, duration=2.0, language="en")
    hello = Segment(0, 0.0, 1.5, " Hello.", speaker="left")
    await store.add_chunks(claim, first=0, count=1, segments=[hello], processed_seconds=1.5)
    await store.finish(claim, Status.COMPLETED)
    url = f"/v1/jobs/{job['id']}/transcript"
    conforms(spec, "TranscriptionOut", await body("GET", url + "?format=json", 200))
    verbose = await body("GET", url + "?format=verbose_json", 200)
    conforms(spec, "VerboseTranscriptionOut", verbose)
    assert verbose["segments"][0]["speaker"] == "left"


async def test_docs_page_uses_only_packaged_assets(aiohttp_client: Any, make_settings: Any) -> None:
    client = await idle_app(aiohttp_client, make_settings)
    page = await client.get("/docs")
    assert page.status == 200 and page.content_type == "text/html"
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    html = await page.text()
    links = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert links and all(not re.match(r"^([a-z]+:)?//", link) for link in links), links
    assets = [link for link in links if link.startswith("docs/")]
    assert sorted(assets) == ["docs/docs.css", "docs/docs.js"]
    for link, content_type in (("docs/docs.css", "text/css"), ("docs/docs.js", "text/javascript")):
        resp = await client.get("/" + link)
        text = await resp.text()
        assert resp.status == 200 and resp.content_type == content_type, link
        assert not re.search(r"https?://", text), f"{link} reaches out to another host"
    assert "openapi.json" in await (await client.get("/docs/docs.js")).text()
    missing = await client.get("/docs/secrets.txt")
    assert missing.status == 404 and (await missing.json())["error"]["code"] == "not_found"
    assert (await client.get("/docs/..%2Fapp.py")).status == 404


async def test_descriptions_are_prose_for_people(aiohttp_client: Any, make_settings: Any) -> None:
    """/docs shows every description: no SPEC requirement ids, no reST markup."""
    spec = await fetch_spec(await idle_app(aiohttp_client, make_settings))
    texts: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("description", "summary") and isinstance(value, str):
                    texts.append(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(spec)
    assert len(texts) > 20
    for text in texts:
        assert not re.search(r"\(([A-I]\d{1,2})[;,)]|\b[A-I]\d{1,2}\)", text), text
        assert "``" not in text, text
