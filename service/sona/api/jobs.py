"""The job queue routes (A1–A7)."""

from __future__ import annotations

from aiohttp import web

from sona import queue
from sona.api.job_requests import (
    finished_transcript,
    load_job,
    standing_model,
    submit,
    submit_url,
)
from sona.api.schemas import JobList, WebhookList, job_model, json_model, webhooks_out
from sona.crashpoints import crash_point
from sona.errors import InvalidRequest
from sona.jobs import Status, validate_job_id
from sona.keys import RUNTIME, STORE

routes = web.RouteTableDef()
CANCEL_WAIT_S = 10.0


@routes.post("/v1/jobs")
async def create_job(request: web.Request) -> web.Response:
    if request.content_type == "application/json":
        job, created = await submit_url(request)
    else:
        job, created = await submit(request)
    crash_point("after_commit")  # the row is committed, the client not yet told
    return json_model(await standing_model(request.app, job), status=202 if created else 200)


@routes.get("/v1/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    return json_model(await standing_model(request.app, await load_job(request)))


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


@routes.delete("/v1/jobs/{job_id}")
async def cancel_job(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    job = await queue.cancel(rt, validate_job_id(request.match_info["job_id"]))
    if job.status == Status.PROCESSING:
        job = await queue.wait(rt, job, CANCEL_WAIT_S)
    return json_model(job_model(job), status=200 if job.status.finished else 202)


@routes.get("/v1/jobs/{job_id}/webhooks")
async def list_webhooks(request: web.Request) -> web.Response:
    """The job's webhook deliveries (E2): state, attempts with their status
    codes and errors, the next attempt."""
    job_id = validate_job_id(request.match_info["job_id"])
    deliveries = await request.app[STORE].deliveries(job_id)
    return json_model(WebhookList(data=webhooks_out(deliveries)))
