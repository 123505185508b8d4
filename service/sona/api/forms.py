"""Reading multipart submissions: the file part streams to disk through
``UploadDir.save``; the other parts are small text fields. Malformed bodies,
too many parts and oversized fields are refused with bounded work."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from sona.api.json_input import MAX_JSON_BYTES, loads
from sona.api.limits import upload_slot
from sona.api.schemas import FIELD_NAME_PATTERN, M, parse
from sona.errors import InvalidRequest, PayloadTooLarge, UploadTimeout
from sona.keys import SETTINGS
from sona.settings import Settings
from sona.uploads import CHUNK, StoredUpload, UploadDir

MAX_PARTS = 64
MAX_FIELD_BYTES = 64 * 1024
FILE_FIELDS = ("file", "audio")  # "audio" for older seed clients
FIELD_NAME = re.compile(FIELD_NAME_PATTERN)


def no_audio(received: str | None = None) -> InvalidRequest:
    """The audio was not where it belongs: say where, and what came instead
    (whisper-asr-webservice's clients send ``audio_file``)."""
    got = f" (received field `{received}`)" if received else ""
    return InvalidRequest(f"no audio: send the file in the `file` field{got}", param="file")


@dataclass
class Form:
    upload: StoredUpload | None = None
    fields: dict[str, list[str]] = field(default_factory=dict)
    # Parts sent as files (with a filename) under a name that is not a file field.
    misplaced: list[str] = field(default_factory=list)

    def first(self) -> dict[str, str]:
        """Each field's first value, empty strings dropped (absent means default)."""
        return {k: v[0] for k, v in self.fields.items() if v and v[0] != ""}

    def discard(self) -> None:
        if self.upload:
            self.upload.path.unlink(missing_ok=True)

    @contextmanager
    def required_upload(self) -> Iterator[StoredUpload]:
        """The uploaded file, which must be there; if the block raises (a bad
        field, say) the file is deleted, so a refused request keeps nothing."""
        try:
            if self.upload is None:
                raise no_audio(self.misplaced[0] if self.misplaced else None)
            yield self.upload
        except BaseException:
            self.discard()
            raise


def check_declared_length(request: web.Request, settings: Settings) -> None:
    """Refuse early when the client declares a body larger than the limit."""
    declared = request.content_length
    # A little room for the multipart envelope and the text fields.
    if declared is not None and declared > settings.max_upload_bytes + 1024 * 1024:
        raise PayloadTooLarge(
            f"request body of {declared} bytes exceeds the upload limit of "
            f"{settings.max_upload_bytes} bytes",
            param="file",
        )


async def read_json(request: web.Request, model: type[M], shape: str) -> M:
    """A JSON object body validated by ``model``; ``shape`` shows the client what
    to send when the body is not JSON or not an object."""
    declared = request.content_length
    if declared is not None and declared > MAX_JSON_BYTES:
        raise PayloadTooLarge(f"a JSON body is limited to {MAX_JSON_BYTES} bytes")
    # The whole body within the idle timeout: a client trickling a small JSON
    # body cannot hold its handler (and connection) open for ever.
    timeout_s = request.app[SETTINGS].upload_idle_timeout_s
    raw = b""
    try:
        async with asyncio.timeout(timeout_s):
            while len(raw) <= MAX_JSON_BYTES and (chunk := await request.content.readany()):
                raw += chunk
    except TimeoutError:
        raise UploadTimeout(f"the JSON body did not arrive within {timeout_s:.0f} s") from None
    try:
        body = loads(raw)
    except InvalidRequest as exc:
        raise InvalidRequest(f"{exc.message}; send a JSON object: {shape}") from None
    if not isinstance(body, dict):
        raise InvalidRequest(f"send a JSON object: {shape}")
    return parse(model, body)


async def read_form(request: web.Request, uploads: UploadDir, settings: Settings) -> Form:
    check_declared_length(request, settings)
    if not request.content_type.startswith("multipart/form-data"):
        raise InvalidRequest(
            "send multipart/form-data with the audio in a 'file' part", param="file"
        )
    form = Form()
    try:
        with upload_slot(request):
            await _read_parts(request, form, uploads, settings)
    except BaseException as exc:
        form.discard()
        # aiohttp's parser reports a bad body as ValueError, AssertionError or an
        # HttpProcessingError (a header line too long, say): all the client's fault.
        if isinstance(exc, (ValueError, AssertionError, HttpProcessingError)):
            raise InvalidRequest(f"malformed multipart body: {str(exc)[:200]}") from None
        raise
    return form


async def _read_parts(
    request: web.Request, form: Form, uploads: UploadDir, settings: Settings
) -> None:
    reader = await request.multipart()
    parts = 0
    while (part := await reader.next()) is not None:
        parts += 1
        if parts > MAX_PARTS:
            raise InvalidRequest(f"more than {MAX_PARTS} form parts")
        if not isinstance(part, BodyPartReader):
            raise InvalidRequest("nested multipart bodies are not supported")
        await _read_part(part, form, uploads, settings)


async def _read_part(
    part: BodyPartReader, form: Form, uploads: UploadDir, settings: Settings
) -> None:
    name = part.name or ""
    if not FIELD_NAME.fullmatch(name):
        raise InvalidRequest(f"form field name {name[:64]!r} is not a plain name")
    if name in FILE_FIELDS:
        if form.upload is not None:
            raise InvalidRequest("only one file per request", param="file")
        form.upload = await uploads.save(
            _chunks(part),
            name=part.filename,
            max_bytes=settings.max_upload_bytes,
            idle_timeout_s=settings.upload_idle_timeout_s,
        )
        return
    # A file under another name may still be a text field (`-F metadata=@m.json`);
    # one too large or not text is the audio sent under the wrong name.
    is_file = part.filename is not None
    if is_file:
        form.misplaced.append(name)
    data = b""
    async for chunk in _chunks(part):
        data += chunk
        if len(data) > MAX_FIELD_BYTES:
            if is_file:
                raise no_audio(name)
            raise InvalidRequest(
                f"form field {name!r} is larger than {MAX_FIELD_BYTES} bytes "
                "(the audio goes in the `file` field)",
                param=name,
            )
    try:
        text = data.decode(part.get_charset(default="utf-8"))
    except (UnicodeDecodeError, LookupError):
        if is_file:
            raise no_audio(name) from None
        raise InvalidRequest(f"form field {name!r} is not valid text", param=name) from None
    form.fields.setdefault(name, []).append(text)


async def _chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(CHUNK):
        yield chunk
