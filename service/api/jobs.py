"""The job queue routes (A1–A7)."""

from __future__ import annotations

import asyncio
import contextlib
import time

from aiohttp import web

from sona.api.forms import read_form, read_json
from sona.api.limits import upload_slot
from sona.api.schemas import (
    JobForm,
    JobList,
    JobOut,
    JobUrl,
    WebhookList,
    caption_style,
    job_model,
    json_model,
    parse,
    webhooks_out,
)
from sona.crashpoints import crash_point
from sona.errors import InvalidRequest, JobNotFinished
from sona.events import TERMINAL, follow
from sona.fetch import fetch
from sona.formats import render
from sona.intake import Submission
from sona.jobs import Job, Status, validate_job_id
from sona.keys import EVENTS, INTAKE, NOTIFIER, RUNTIME, SETTINGS, STORE, UPLOADS, WORKER
from sona.standing import standings
from sona.uploads import StoredUpload

routes = web.RouteTableDef()
CANCEL_WAIT_S = 10.0


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


async def admit(request: web.Request, upload: StoredUpload, sub: Submission) -> tuple[Job, bool]:
    """Queue the job and wake a worker (here or on any node); every submitting
    route goes through here."""
    job, created = await request.app[INTAKE].admit(upload, sub)
    if created:
        await request.app[NOTIFIER].job_queued(job.id)
    return job, created


async def submit(request: web.Request) -> tuple[Job, bool]:
    """Read a multipart submission and admit it; shared with the seed route."""
    app = request.app
    form = await read_form(request, app[UPLOADS], app[SETTINGS])
    with form.required_upload() as upload:
        sub = _submission(request, parse(JobForm, form.first()))
    return await admit(request, upload, sub)


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
    return await admit(request, upload, sub)


@routes.post("/v1/jobs")
async def create_job(request: web.Request) -> web.Response:
    if request.content_type == "application/json":
        job, created = await submit_url(request)
    else:
        job, created = await submit(request)
    crash_point("after_commit")  # the row is committed, the client not yet told
    return json_model(await standing_model(request.app, job), status=202 if created else 200)


async def load_job(request: web.Request) -> Job:
    return await request.app[STORE].get(validate_job_id(request.match_info["job_id"]))


@routes.get("/v1/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    return json_model(await standing_model(request.app, await load_job(request)))


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


@routes.get("/v1/jobs/{job_id}/transcript")
async def get_transcript(request: web.Request) -> web.Response:
    job = await load_job(request)
    return await finished_transcript(request, job, request.query.get("format", "text"))


@routes.get("/v1/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    q = request.query
    try:
        status = Status(q["status"]) if "status" in q else None
        limit = int(q.get("limit", "20"))
    except ValueError:
        raise InvalidRequest(
            "status must be one of queued, processing, completed, failed, cancelled; "
            "limit an integer",
            param="status" if "status" in q else "limit",
        ) from None
    if not 1 <= limit <= 200:
        raise InvalidRequest("limit must be between 1 and 200", param="limit")
    before = validate_job_id(q["before"]) if "before" in q else None
    jobs, has_more = await request.app[STORE].list_jobs(status=status, limit=limit, before=before)
    page = JobList(
        data=[job_model(j) for j in jobs],
        has_more=has_more,
        next_before=jobs[-1].id if has_more and jobs else None,
    )
    return json_model(page)


async def cancel(app: web.Application, job_id: str) -> Job:
    """Cancel through the store, and tell the worker running the job, on this node
    or another, to stop it now (the store flag reaches it anyway, a little later)."""
    job = await app[STORE].cancel(job_id)
    if job.status == Status.CANCELLED:
        app[RUNTIME].webhooks.wake()  # a queued job's webhook is due now
    if job.status == Status.PROCESSING:
        await app[NOTIFIER].cancel_requested(job_id)
        job = await app[STORE].get(job_id)
    return job


async def wait_finished(app: web.Application, job: Job, timeout_s: float) -> Job:
    """``job`` once it has finished, or as it is after ``timeout_s``."""
    # Segments already stored are skipped: only the status matters here.
    updates = follow(app[STORE], app[EVENTS], job.id, after=job.segments_done - 1)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s), contextlib.aclosing(updates):
            async for update in updates:
                if update.type in TERMINAL:
                    return update.job
    return await app[STORE].get(job.id)


@routes.delete("/v1/jobs/{job_id}")
async def cancel_job(request: web.Request) -> web.Response:
    job = await cancel(request.app, validate_job_id(request.match_info["job_id"]))
    if job.status == Status.PROCESSING:
        job = await wait_finished(request.app, job, CANCEL_WAIT_S)
    return json_model(job_model(job), status=200 if job.status.finished else 202)


@routes.get("/v1/jobs/{job_id}/webhooks")
async def list_webhooks(request: web.Request) -> web.Response:
    """The job's webhook deliveries (E2): state, attempts with their status
    codes and errors, the next attempt."""
    job_id = validate_job_id(request.match_info["job_id"])
    deliveries = await request.app[STORE].deliveries(job_id)
    return json_model(WebhookList(data=webhooks_out(deliveries)))
