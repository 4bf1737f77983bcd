"""Upload request bodies into the data store, multipart or raw, streamed in constant memory.

The event loop receives chunks and groups them into blocks; each block is hashed and written by a worker thread
while the next one arrives, so at most two blocks are in memory whatever the file size.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import anyio.to_thread
from litestar import Request
from litestar.exceptions import InternalServerException
from litestar.openapi.spec import OpenAPIMediaType, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from multipart import MultipartSegment, ParserError, ParserLimitReached, PushMultipartParser

from appliance.errors import InvalidRequest, UnsupportedType
from appliance.models import StoredFile
from appliance.storage import FileStore, Upload
from web.idempotency import IdempotentOperation

BLOCK_BYTES = 4 << 20
MAX_FIELD_BYTES = 64 << 10
MAX_PARTS = 16
MULTIPART_OVERHEAD = 64 << 10  # headers and boundaries around the file in a multipart body, at most

_FITS_BYTES = Schema(
    type=OpenAPIType.STRING,
    format=OpenAPIFormat.BINARY,
    description="A FITS image (.fits, .fit, .fts, or one of them gzipped) holding a 2-D image",
)


@dataclass
class MultipartUpload(IdempotentOperation):
    """POST /upload's body, as ``_receive_multipart`` reads it."""

    def __post_init__(self) -> None:
        super().__post_init__()
        form = Schema(
            type=OpenAPIType.OBJECT,
            properties={
                "file": _FITS_BYTES,
                "tag": Schema(type=OpenAPIType.STRING, description="A label to filter by"),
            },
            required=["file"],
        )
        self.request_body = RequestBody(required=True, content={"multipart/form-data": OpenAPIMediaType(schema=form)})


@dataclass
class RawUpload(IdempotentOperation):
    """PUT|POST /upload/<filename>'s body: the file itself, whatever its Content-Type."""

    def __post_init__(self) -> None:
        super().__post_init__()
        content = {"application/octet-stream": OpenAPIMediaType(schema=_FITS_BYTES)}
        self.request_body = RequestBody(required=True, content=content)


# One thread per upload block at a time; a small dedicated pool keeps big uploads off the pool that runs handlers.
_WRITERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="upload-writer")


class BlockWriter:
    def __init__(self, upload: Upload) -> None:
        self.upload = upload
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._pending: Future[None] | None = None

    async def write(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered >= BLOCK_BYTES:
            await self._hand_over()

    async def drain(self) -> None:
        """Write what is buffered and wait until every block is written (errors of any block surface here)."""
        if self._chunks:
            await self._hand_over()
        await self._wait()

    def settle(self) -> None:
        """Wait for a block in flight, ignoring its outcome, so the upload can be aborted after an error.

        Blocking on purpose: it is at most one block's write, and it must finish even if this task is cancelled."""
        if self._pending is not None:
            wait([self._pending])
            self._pending = None

    async def _hand_over(self) -> None:
        await self._wait()
        chunks, self._chunks, self._buffered = self._chunks, [], 0
        self._pending = _WRITERS.submit(self.upload.write, *chunks)

    async def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await asyncio.wrap_future(pending)


class _Incoming:
    """The upload being received, if any, so that one place can discard it whatever goes wrong."""

    def __init__(self) -> None:
        self.upload: Upload | None = None
        self.writer: BlockWriter | None = None

    def begin(self, store: FileStore, user: str, filename: str, declared_size: int | None) -> BlockWriter:
        self.upload = store.begin_upload(user, filename, declared_size)
        self.writer = BlockWriter(self.upload)
        return self.writer

    async def discard(self) -> None:
        if self.writer is not None:
            self.writer.settle()
        if self.upload is not None:
            self.upload.abort()


async def receive_upload(
    request: Request, store: FileStore, user: str, filename: str | None = None, tag: str | None = None
) -> StoredFile:
    """Store the body of ``request`` as a new file: a raw body named ``filename``, or, when ``filename`` is None,
    a multipart/form-data body with a ``file`` part and an optional ``tag`` part (caesar-rest's POST /upload).

    Whatever fails (bad input, a dropped connection, a full disk), nothing is left on disk or in the DB."""
    incoming = _Incoming()
    try:
        if filename is not None:
            writer = incoming.begin(store, user, filename, request.content_length)
            async for chunk in _body(request):
                await writer.write(chunk)
        else:
            tag = await _receive_multipart(request, store, user, incoming)
        if incoming.upload is None or incoming.writer is None:
            raise InvalidRequest("missing_file", "No file part in the request: send the image in the form field 'file'")
        await incoming.writer.drain()
        return await anyio.to_thread.run_sync(incoming.upload.finish, tag)
    finally:
        await incoming.discard()


async def _receive_multipart(request: Request, store: FileStore, user: str, incoming: _Incoming) -> str | None:
    """Parse the multipart body, streaming the 'file' part into ``incoming``; returns the 'tag' field."""
    content_type, params = request.content_type
    if content_type != "multipart/form-data" or not params.get("boundary"):
        raise UnsupportedType(
            "unsupported_media_type",
            "POST /upload takes multipart/form-data with a 'file' field and an optional 'tag' field; "
            "to send the raw bytes use PUT /upload/<filename>",
        )
    declared = request.content_length
    at_least = max(0, declared - MULTIPART_OVERHEAD) if declared is not None else None
    fields: dict[str, str] = {}
    field: bytearray | None = None
    segment: MultipartSegment | None = None
    try:
        with PushMultipartParser(params["boundary"], max_segment_count=MAX_PARTS) as parser:
            async for chunk in _body(request, final_empty=True):
                for event in parser.parse(chunk):
                    if isinstance(event, MultipartSegment):
                        segment = event
                        if segment.filename is None:
                            field = bytearray()
                        elif segment.name != "file" or incoming.upload is not None:
                            raise InvalidRequest(
                                "invalid_upload", "send exactly one file, in the form field named 'file'"
                            )
                        else:
                            incoming.begin(store, user, segment.filename, at_least)
                    elif event is None:
                        if segment is not None and field is not None:
                            fields[segment.name] = _text(segment, field)
                        segment, field = None, None
                    elif field is not None:
                        field += event
                        if len(field) > MAX_FIELD_BYTES:
                            raise InvalidRequest("invalid_upload", f"form field {segment.name!r} is too long")
                    elif incoming.writer is not None:
                        await incoming.writer.write(event)
                if parser.closed:
                    break
    except (ParserError, ParserLimitReached) as exc:
        raise InvalidRequest("invalid_multipart", f"the multipart/form-data body is malformed: {exc}") from None
    return fields.get("tag")


def _text(segment: MultipartSegment, data: bytearray) -> str:
    try:
        return data.decode(segment.charset or "utf-8", errors="replace")
    except LookupError:
        raise InvalidRequest(
            "invalid_multipart", f"form field {segment.name!r} is in an unknown charset {segment.charset!r}"
        ) from None


async def _body(request: Request, final_empty: bool = False) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            if chunk or final_empty:
                yield chunk
    except InternalServerException as exc:  # litestar's way of saying the client went away mid-body
        raise InvalidRequest("incomplete_upload", f"the upload did not complete: {exc.detail}") from None
