"""Streaming a stored file to the client, whole or as one byte range (RFC 9110 Range / If-Range)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import anyio
from litestar import Response
from litestar.openapi.spec import (
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    Parameter,
    Reference,
    Schema,
)
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.response import Stream

from web.errors import error_body

CHUNK_BYTES = 1 << 20
_MAX_DIGITS = 18  # every file size fits; Python refuses to parse integers of more than 4 300 digits
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _header(description: str) -> OpenAPIHeader:
    return OpenAPIHeader(schema=Schema(type=OpenAPIType.STRING), description=description)


_FILE_HEADERS = {
    "Accept-Ranges": _header("bytes: a single Range (and If-Range) is honoured"),
    "ETag": _header("The file's entity tag, for If-Range"),
    "Content-Disposition": _header("attachment, with the file's name"),
    "Content-Length": _header("Bytes in this answer"),
}


_RANGE_PARAMETERS = [
    Parameter(
        name="Range",
        param_in="header",
        required=False,
        description="One byte range, bytes=<first>-<last>, bytes=<first>- or bytes=-<suffix length>; others are "
        "ignored (the whole file is sent)",
        schema=Schema(type=OpenAPIType.STRING),
    ),
    Parameter(
        name="If-Range",
        param_in="header",
        required=False,
        description="The range is sent only if the file's ETag is still this one",
        schema=Schema(type=OpenAPIType.STRING),
    ),
]


def file_operation(*media_types: str, json: Schema | Reference | None = None) -> type[Operation]:
    """The OpenAPI operation of a route answering with a file streamed by ``stream_file``: the whole file (200) or
    the byte range asked for (206), in one of ``media_types``; a JSON file is described by ``json`` (any JSON by
    default)."""
    binary = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
    schemas = {
        media_type: (json or Schema()) if media_type == "application/json" else binary for media_type in media_types
    }

    def answer(description: str, *, ranged: bool = False, **headers: OpenAPIHeader) -> OpenAPIResponse:
        # A byte range of a JSON file is not a JSON document: its JSON media type has no schema.
        return OpenAPIResponse(
            description=description,
            headers={**_FILE_HEADERS, **headers},
            content={
                media_type: OpenAPIMediaType(schema=None if ranged and media_type == "application/json" else schema)
                for media_type, schema in schemas.items()
            },
        )

    @dataclass
    class FileOperation(Operation):
        def __post_init__(self) -> None:
            self.parameters = [*(self.parameters or []), *_RANGE_PARAMETERS]
            ranged = answer(
                "The byte range asked for", ranged=True, **{"Content-Range": _header("bytes <first>-<last>/<size>")}
            )
            answers = {**(self.responses or {}), "200": answer("The whole file"), "206": ranged}
            self.responses = dict(sorted(answers.items()))

    return FileOperation


def content_disposition(filename: str) -> str:
    """attachment with an ASCII fallback name and the exact UTF-8 name (RFC 6266)."""
    fallback = re.sub(r"[^A-Za-z0-9._ -]", "_", filename) or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def stream_file(
    path: Path,
    size: int,
    *,
    filename: str,
    media_type: str,
    etag: str,
    range_header: str | None,
    if_range: str | None,
) -> Response | Stream:
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": f'"{etag}"',
        "Content-Disposition": content_disposition(filename),
    }
    wanted = _byte_range(range_header, size) if range_header and (not if_range or if_range == f'"{etag}"') else None
    if wanted == "unsatisfiable":
        return Response(
            error_body(f"the requested range is outside the file ({size} bytes)", "range_not_satisfiable"),
            status_code=416,
            headers={"Content-Range": f"bytes */{size}"},
        )
    if wanted is None:
        start, end, status = 0, size - 1, 200
    else:
        (start, end), status = wanted, 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1)
    return Stream(_read(path, start, end), media_type=media_type, headers=headers, status_code=status)


def _byte_range(header: str, size: int) -> tuple[int, int] | str | None:
    """The single range asked for, "unsatisfiable", or None to send the whole file (invalid or multiple ranges)."""
    match = _RANGE.match(header.strip().replace(" ", ""))
    if not match or match.group(1) == match.group(2) == "":
        return None
    start, last = (_position(group) for group in match.groups())
    if start is None:  # the last `last` bytes
        if last == 0:
            return "unsatisfiable"
        return max(0, size - last), size - 1
    end = min(last, size - 1) if last is not None else size - 1
    if start >= size:
        return "unsatisfiable"
    if end < start:
        return None
    return start, end


def _position(digits: str) -> int | None:
    """A byte position; one longer than any file could be stands for "beyond the end" (and stays a small int)."""
    if not digits:
        return None
    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS


async def _read(path: Path, start: int, end: int) -> AsyncIterator[bytes]:
    remaining = end - start + 1
    async with await anyio.open_file(path, "rb") as f:
        await f.seek(start)
        while remaining > 0:
            chunk = await f.read(min(CHUNK_BYTES, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk
