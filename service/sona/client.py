"""Async HTTP client for a running Sona daemon, shared by the CLI, the MCP tools
and the sidecar helper. It imports only httpx and the standard library, so it
works against any daemon, local or remote.

Every failure is one of these; httpx's own errors are translated in exactly one
place, ``SonaClient._send``::

    SonaClientError            anything this client reports (bad file, bad URL, odd reply)
    ├── ServiceUnreachable     no connection, connection dropped, or no answer in time
    └── ApiError               the daemon answered with an error body (status, code, type)
"""

from __future__ import annotations

import asyncio
import inspect
import json
import mimetypes
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from sona.wire import FINISHED

DEFAULT_URL = "http://127.0.0.1:8765"
CHUNK = 1 << 20  # file bytes per read while uploading

# What ``wait`` reports a change of: status, progress, and where the job stands.
WATCHED = ("status", "progress", "segments_done", "queue_position", "eta_s")

ProgressCallback = Callable[[dict[str, Any]], Awaitable[None] | None]


class SonaClientError(Exception):
    """Base of every error this client raises."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class ServiceUnreachable(SonaClientError):
    """The daemon could not be reached, dropped the connection, or did not answer in time."""


class ApiError(SonaClientError):
    """The daemon answered with an error: ``{"error": {"message", "type", "code", "param"}}``."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        code: str | None = None,
        *,
        type: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message, status, code)
        self.type = type
        self.param = param
        self.retry_after = retry_after

    @classmethod
    def from_response(cls, resp: httpx.Response) -> ApiError:
        try:
            err = resp.json()["error"]
            message, code = str(err["message"]), err.get("code")
            type_, param = err.get("type"), err.get("param")
        except (ValueError, KeyError, TypeError):
            # Not our error shape (a proxy's HTML page, say): keep what there is.
            message = resp.text.strip()[:500] or resp.reason_phrase
            code, type_, param = None, None, None
        retry = resp.headers.get("Retry-After")
        return cls(
            message,
            resp.status_code,
            code,
            type=type_,
            param=param,
            retry_after=float(retry) if retry and retry.isdigit() else None,
        )


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _disposition(name: str, filename: str | None = None) -> bytes:
    # HTML5 escaping of the quoted strings, as browsers and httpx do it.
    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")

    head = f'Content-Disposition: form-data; name="{esc(name)}"'
    if filename is not None:
        head += f'; filename="{esc(filename)}"'
    return head.encode()


class _Multipart:
    """A multipart/form-data body whose file part is read in chunks off the
    event loop, so an upload never holds the file in memory nor blocks the loop."""

    def __init__(self, path: Path, fields: dict[str, str]):
        if not path.is_file():
            raise SonaClientError(f"no such file: {path}", code="file_not_found")
        self.path = path
        self.boundary = secrets.token_hex(16)
        b = self.boundary.encode()
        parts = [
            b"--" + b + b"\r\n" + _disposition(k) + b"\r\n\r\n" + v.encode() + b"\r\n"
            for k, v in fields.items()
        ]
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self.head = b"".join(parts) + (
            b"--" + b + b"\r\n" + _disposition("file", path.name) + b"\r\n"
            b"Content-Type: " + ctype.encode() + b"\r\n\r\n"
        )
        self.tail = b"\r\n--" + b + b"--\r\n"
        self.length = len(self.head) + path.stat().st_size + len(self.tail)

    @property
    def headers(self) -> dict[str, str]:
        return {
            "Content-Type": f"multipart/form-data; boundary={self.boundary}",
            "Content-Length": str(self.length),
        }

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.head
        f = await asyncio.to_thread(self.path.open, "rb")
        try:
            while chunk := await asyncio.to_thread(f.read, CHUNK):
                yield chunk
        finally:
            f.close()
        yield self.tail


class SonaClient:
    """Talks to one daemon. ``base_url`` defaults to ``$SONA_URL``, then
    http://127.0.0.1:8765; ``api_key`` to ``$SONA_API_KEY``. ``transport`` lets a
    caller use a unix socket (``httpx.AsyncHTTPTransport(uds=...)``) or a test double.

    Use it as an async context manager, or call ``aclose()``."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.base_url = (base_url or os.environ.get("SONA_URL") or DEFAULT_URL).rstrip("/")
        self.timeout = timeout
        key = api_key if api_key is not None else os.environ.get("SONA_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.AsyncClient(timeout=timeout, headers=headers, transport=transport)

    async def __aenter__(self) -> SonaClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The one place where httpx errors become ours."""
        url = self.base_url + path
        try:
            resp = await self._http.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            raise ServiceUnreachable(
                f"Sona service at {self.base_url} did not answer within {self.timeout:g} s "
                f"({type(exc).__name__}); check that `sona serve` is running and not overloaded",
                code="timeout",
            ) from exc
        except httpx.TransportError as exc:
            raise ServiceUnreachable(
                f"Sona service unreachable at {self.base_url} ({exc or type(exc).__name__}); "
                "start it with `sona serve`, or point SONA_URL at a running one",
                code="unreachable",
            ) from exc
        except (httpx.InvalidURL, httpx.HTTPError) as exc:
            raise SonaClientError(f"bad request to {url}: {exc}", code="client_error") from exc
        if resp.status_code >= 400:
            raise ApiError.from_response(resp)
        return resp

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        resp = await self._send(method, path, **kwargs)
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise SonaClientError(
                f"{self.base_url}{path} answered {resp.status_code} without a JSON object; "
                "is that URL a Sona service?",
                status=resp.status_code,
                code="bad_response",
            )
        return body

    async def submit(
        self, path: str | os.PathLike[str], *, idempotency_key: str | None = None, **options: Any
    ) -> dict[str, Any]:
        """Upload ``path`` as a new job; ``options`` are the form fields of
        POST /v1/jobs (model, language, prompt, hotwords, task, word_timestamps,
        vad_filter, diarize, job_id, priority, metadata, callback_url, ...).
        None values are left out; dicts are sent as JSON."""
        fields = {k: _form_value(v) for k, v in options.items() if v is not None}
        body = await asyncio.to_thread(_Multipart, Path(path), fields)
        headers = body.headers
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return await self._json("POST", "/v1/jobs", content=body, headers=headers)

    async def job(self, job_id: str) -> dict[str, Any]:
        return await self._json("GET", f"/v1/jobs/{quote(job_id, safe='')}")

    async def transcript(self, job_id: str, fmt: str = "text") -> str:
        path = f"/v1/jobs/{quote(job_id, safe='')}/transcript"
        return (await self._send("GET", path, params={"format": fmt})).text

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return await self._json("DELETE", f"/v1/jobs/{quote(job_id, safe='')}")

    async def jobs(
        self, status: str | None = None, limit: int = 20, before: str | None = None
    ) -> dict[str, Any]:
        params: dict[str, str | int] = {"limit": limit}
        if status:
            params["status"] = status
        if before:
            params["before"] = before
        return await self._json("GET", "/v1/jobs", params=params)

    async def search(
        self,
        q: str,
        *,
        limit: int = 20,
        cursor: str | None = None,
        job_id: str | None = None,
        language: str | None = None,
        created_after: str | None = None,
        created_before: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """``GET /v1/search``: one page of hits (``data``, ``has_more``, ``next_cursor``)."""
        params: dict[str, str | int] = {"q": q, "limit": limit}
        optional = {
            "cursor": cursor,
            "job_id": job_id,
            "language": language,
            "created_after": created_after,
            "created_before": created_before,
        }
        params.update({k: v for k, v in optional.items() if v is not None})
        params.update({f"metadata.{k}": v for k, v in (metadata or {}).items()})
        return await self._json("GET", "/v1/search", params=params)

    async def health(self) -> dict[str, Any]:
        return await self._json("GET", "/health")

    async def models(self) -> dict[str, Any]:
        """The loaded models (OpenAI list shape)."""
        return await self._json("GET", "/v1/models")

    async def load_model(self, name_or_path: str) -> dict[str, Any]:
        return await self._json("POST", "/v1/models/load", json={"model": name_or_path})

    async def unload_model(self, model_id: str | None = None) -> dict[str, Any]:
        """Unload one model, or every model when ``model_id`` is None."""
        path = "/v1/models" if model_id is None else f"/v1/models/{quote(model_id, safe='/')}"
        return await self._json("DELETE", path)

    async def wait(
        self,
        job_id: str,
        timeout_s: float,
        on_progress: ProgressCallback | None = None,
        poll_s: float = 0.5,
    ) -> dict[str, Any]:
        """Poll until the job is finished, or until ``timeout_s`` has passed, and
        return it as last seen. ``on_progress`` (sync or async) gets the job each
        time its status or progress changes. The whole call, requests included,
        stays within ``timeout_s``; ``timeout_s <= 0`` looks once."""
        if timeout_s <= 0:
            return await self.job(job_id)
        job: dict[str, Any] | None = None
        seen: tuple[Any, ...] | None = None
        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline:
                job = await self.job(job_id)
                while True:
                    state = tuple(job.get(k) for k in WATCHED)
                    if on_progress is not None and state != seen:
                        seen = state
                        result = on_progress(job)
                        if inspect.isawaitable(result):
                            await result
                    if job["status"] in FINISHED:
                        return job
                    await asyncio.sleep(poll_s)
                    job = await self.job(job_id)
        except TimeoutError:
            if not deadline.expired():
                raise  # someone else's timeout (a callback's, say), not our deadline
            if job is None:
                raise ServiceUnreachable(
                    f"Sona service at {self.base_url} did not answer within {timeout_s:g} s",
                    code="timeout",
                ) from None
            # Deadline reached mid-sleep or mid-request: the last answer is current enough.
            return job
