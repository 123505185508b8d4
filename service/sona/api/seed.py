"""Seed-compatible routes (A12) for tools written against the first Sona:
the same queue underneath, their older response shapes on top."""

from __future__ import annotations

from aiohttp import web

from sona.api.errors import public_message
from sona.api.job_requests import finished_transcript, load_job, submit
from sona.api.schemas import SeedJobOut, SeedStatusOut, json_model
from sona.jobs import Status

routes = web.RouteTableDef()


@routes.post("/transcribe")
async def transcribe(request: web.Request) -> web.Response:
    job, _ = await submit(request)
    return json_model(SeedJobOut(job_id=job.id, status=job.status.value))


@routes.get("/status/{job_id}")
async def status(request: web.Request) -> web.Response:
    job = await load_job(request)
    return json_model(
        SeedStatusOut(
            job_id=job.id,
            status=job.status.value,
            progress=round(job.progress, 4),
            transcript=job.text if job.status == Status.COMPLETED else None,
            error=public_message(job.error_message) if job.error_message else None,
        )
    )


@routes.get("/download/{job_id}")
async def download(request: web.Request) -> web.Response:
    job = await load_job(request)
    if job.status != Status.COMPLETED:
        # The seed contract: 404 until the transcript exists.
        raise web.HTTPNotFound(reason=f"transcript for job {job.id} is not ready ({job.status})")
    return await finished_transcript(request, job, "text")
