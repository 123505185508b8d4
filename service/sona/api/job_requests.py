"""What the job routes share (A1, A3, A12, I2): a submission read from a request
(multipart, or JSON naming a URL) and admitted through ``sona.queue``, the job a
path names, and its finished transcript as a response. No routes here, so the
handler modules (``jobs``, ``seed``, ``dashboard``) need not import one another."""

from __future__ import annotations

import time

from aiohttp import web

from sona import queue
from sona.api.forms import read_form, read_json
from sona.api.limits import upload_slot
from sona.api.schemas import JobForm, JobOut, JobUrl, caption_style, job_model, parse
from sona.errors import InvalidRequest, JobNotFinished
from sona.fetch import fetch
from sona.formats import render
from sona.intake import Submission
from sona.jobs import Job, Status, validate_job_id
from sona.keys import INTAKE, RUNTIME, SETTINGS, STORE, UPLOADS, WORKER
from sona.standing import standings


def _submission(request: web.Request, fields: JobForm) -> Submission:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 255:
        raise InvalidRequest("Idempotency-Key must be 1-255 characters", param="Idempotency-Key")
    return Submission(
        options=fields.options(),
        job_id=fields.job_id,
        idempotency_key=key,
        priority=fields.priority,
        metadata=fields.metadata,
        callback_url=fields.callback_url,
        dedupe=request.app[SETTINGS].dedupe if fields.dedupe is None else fields.dedupe,
    )


async def submit(request: web.Request) -> tuple[Job, bool]:
    """Read a multipart submission and admit it; shared with the seed route."""
    app = request.app
    form = await read_form(request, app[UPLOADS], app[SETTINGS])
    with form.required_upload() as upload:
        sub = _submission(request, parse(JobForm, form.first()))
    return await queue.admit(request.app[RUNTIME], upload, sub)


async def submit_url(request: web.Request) -> tuple[Job, bool]:
    """``{"url": ..., options...}``: Sona fetches the audio itself (A1, E3 rules)."""
    fields = await read_json(request, JobUrl, '{"url": "https://...", ...options}')
    sub = _submission(request, fields)
    await request.app[INTAKE].check_callback(sub.callback_url)  # before fetching anything
    settings = request.app[SETTINGS]
    with upload_slot(request):  # a fetch stores a file just as an upload does
        upload = await fetch(
            fields.url,
            request.app[UPLOADS],
            allow_private=settings.private_urls_allowed,
            max_bytes=settings.max_upload_bytes,
            timeout_s=settings.upload_idle_timeout_s,
        )
    return await queue.admit(request.app[RUNTIME], upload, sub)


async def load_job(request: web.Request) -> Job:
    return await request.app[STORE].get(validate_job_id(request.match_info["job_id"]))


async def standing_model(app: web.Application, job: Job) -> JobOut:
    """The job object with where the job stands (queue position, ETA)."""
    where = await standings(app[STORE], [job], throughput(app))
    return job_model(job, where.get(job.id))


def throughput(app: web.Application) -> float | None:
    """This process's worker's measured rate; ``None`` on an API node."""
    worker = app[WORKER]
    return worker.throughput.rate(time.monotonic()) if worker is not None else None


async def finished_transcript(request: web.Request, job: Job, fmt: str) -> web.Response:
    if job.status != Status.COMPLETED:
        raise JobNotFinished(f"job {job.id} is {job.status}, not completed", status=job.status)
    style = caption_style(job.options, request.query)
    body, content_type = render(job, await request.app[STORE].segments(job.id), fmt, style)
    return web.Response(text=body, content_type=content_type.split(";")[0], charset="utf-8")
