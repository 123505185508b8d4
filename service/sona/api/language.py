"""Language detection without transcription: ``POST /v1/audio/language``.

The upload's first chunk of speech is cut as a job's would be and the model
says which language it is, so the answer is the one a job of the same file
would record. Nothing is queued: the model is asked directly, beside the jobs
it is decoding. The upload is deleted as soon as the answer is known."""

from __future__ import annotations

import asyncio

from aiohttp import web

from sona.api.forms import read_form
from sona.api.openai_schemas import LanguageForm, LanguageOut, LanguageScore
from sona.api.schemas import json_model, parse
from sona.audio import probe
from sona.errors import NoEngine
from sona.keys import ENGINE, INTAKE, MODELS, SETTINGS, UPLOADS

routes = web.RouteTableDef()


@routes.post("/v1/audio/language")
async def detect_language(request: web.Request) -> web.Response:
    app = request.app
    form = await read_form(request, app[UPLOADS], app[SETTINGS])
    with form.required_upload() as upload:
        req = parse(LanguageForm, form.first())
        model_id = app[INTAKE].resolve_model(req.model)
        engine = app[ENGINE]
        if engine is None:
            raise NoEngine("this is an API node (--no-worker): it runs no model", param="model")
    try:
        # A file no decoder opens is the client's 400 here, as at a job's submit.
        await asyncio.to_thread(probe, upload.path)
        entry = await app[MODELS].acquire(model_id)
        try:
            found = await engine.detect_language(
                entry.id, upload.path, app[SETTINGS].max_audio_seconds
            )
        finally:
            app[MODELS].release(entry)
    finally:
        form.discard()
    if found is None:
        return json_model(
            LanguageOut(language=None, language_probability=None, languages=[], model=entry.id)
        )
    return json_model(
        LanguageOut(
            language=found.language,
            language_probability=found.probability,
            languages=[LanguageScore(language=lang, probability=p) for lang, p in found.languages],
            model=entry.id,
        )
    )
