"""caesar-rest's file routes: upload, list, inspect, download and delete FITS images."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import anyio.to_thread
import msgspec
from litestar import Controller, Request, Response, get, post, route
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Stream

from appliance.core import Appliance
from appliance.errors import InvalidRequest
from appliance.models import StoredFile
from web.auth import CHANGES_STATE
from web.downloads import file_operation, stream_file
from web.errors import refusals
from web.idempotency import IDEMPOTENT
from web.params import Limit, Offset
from web.uploads import MultipartUpload, RawUpload, receive_upload

API = "/caesar/api/v1.0"
MEDIA_TYPES = {"fits": "application/fits", "fit": "application/fits", "fts": "application/fits"}
LIST_HEADERS = [  # documented only: each list sets them itself (next_page); value="" documents a string
    ResponseHeader(name="X-Total-Count", value="", documentation_only=True, description="How many there are in all"),
    ResponseHeader(
        name="Link", value="", documentation_only=True, description='The next page, rel="next", when there is one'
    ),
]
UPLOAD_REFUSALS = refusals(403, 409, 413, 415, 422, 507)


class StatusReply(msgspec.Struct):
    status: str


class FileDocument(msgspec.Struct):
    """A file as /fileids and /file/<uuid> show it: caesar-rest's fields, with ``metadata`` filled in."""

    fileid: str
    filename_orig: str
    fileext: str
    filesize: float  # MB (2**20 bytes), as caesar-rest
    filedate: str
    metadata: dict[str, Any]  # the FITS header summary: shape, bunit, WCS, beam, frequency, notes
    tag: str
    size_bytes: int
    sha256: str


class EarlierUpload(msgspec.Struct):
    uuid: str
    filename_orig: str
    date: str


class UploadReply(msgspec.Struct):
    """caesar-rest's upload response, plus the header summary, exact size and checksum, and the earlier upload of
    the same bytes if there is one (the file is kept all the same)."""

    filename_orig: str
    tag: str
    format: str
    size: float  # MB
    uuid: str
    date: str
    status: str
    metadata: dict[str, Any]
    size_bytes: int
    sha256: str
    same_as: EarlierUpload | None


def _megabytes(size: int) -> float:
    return size / (1024.0 * 1024.0)  # caesar-rest's "MB"


def file_document(record: StoredFile) -> FileDocument:
    return FileDocument(
        fileid=record.uuid,
        filename_orig=record.filename_orig,
        fileext=record.fileext,
        filesize=_megabytes(record.size_bytes),
        filedate=record.created.isoformat(),
        metadata=record.summary,
        tag=record.tag or "",
        size_bytes=record.size_bytes,
        sha256=record.sha256,
    )


def upload_reply(record: StoredFile, earlier: StoredFile | None) -> UploadReply:
    same_as = (
        None if earlier is None else EarlierUpload(earlier.uuid, earlier.filename_orig, earlier.created.isoformat())
    )
    return UploadReply(
        filename_orig=record.filename_orig,
        tag=record.tag or "",
        format=record.fileext,
        size=_megabytes(record.size_bytes),
        uuid=record.uuid,
        date=record.created.isoformat(),
        status="File uploaded with success",
        metadata=record.summary,
        size_bytes=record.size_bytes,
        sha256=record.sha256,
        same_as=same_as,
    )


def next_page(route: str, query: dict[str, Any], offset: int, count: int, total: int) -> dict[str, str]:
    """The headers of a page of a list: the total, and a link to the next page when there is one."""
    headers = {"X-Total-Count": str(total)}
    if offset + count < total:
        given = {name: value for name, value in query.items() if value is not None}
        headers["Link"] = f'<{API}{route}?{urlencode({**given, "offset": offset + query["limit"]})}>; rel="next"'
    return headers


class FilesController(Controller):
    path = API
    tags = ["files"]

    @post(
        "/upload",
        request_max_body_size=None,
        status_code=200,
        opt=IDEMPOTENT,
        summary="Upload a FITS image (multipart)",
        operation_class=MultipartUpload,
        responses=UPLOAD_REFUSALS,
    )
    async def upload(
        self, request: Request, appliance: NamedDependency[Appliance], user: NamedDependency[str]
    ) -> UploadReply:
        """multipart/form-data with the image in the field ``file`` and an optional ``tag`` field.

        Accepts .fits, .fit, .fts and their .gz forms. The file is validated with astropy before it is
        registered: it must hold a 2-D image (further axes of length 1 are fine). The reply carries the
        header summary in ``metadata``."""
        record = await receive_upload(request, appliance.files, user)
        return upload_reply(record, await anyio.to_thread.run_sync(appliance.files.earlier_copy, record))

    @route(
        "/upload/{filename:str}",
        http_method=["PUT", "POST"],
        request_max_body_size=None,
        status_code=200,
        opt=IDEMPOTENT,
        summary="Upload a FITS image as the raw request body",
        operation_class=RawUpload,
        responses=UPLOAD_REFUSALS,
    )
    async def upload_raw(
        self,
        request: Request,
        appliance: NamedDependency[Appliance],
        user: NamedDependency[str],
        filename: FromPath[str],
        tag: FromQuery[str | None] = None,
    ) -> UploadReply:
        """The request body is the file itself, named by the path (``curl -T image.fits .../upload/``).
        Same checks and reply as POST /upload; best for very large files."""
        record = await receive_upload(request, appliance.files, user, filename=filename, tag=tag)
        return upload_reply(record, await anyio.to_thread.run_sync(appliance.files.earlier_copy, record))

    @get("/fileids", summary="List the caller's files", response_headers=LIST_HEADERS, responses=refusals())
    async def list_files(
        self,
        appliance: NamedDependency[Appliance],
        user: NamedDependency[str],
        tag: FromQuery[str | None] = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> Response[list[FileDocument]]:
        """A bare list (as caesar-rest), newest first. Paging: ``limit``/``offset``; the total is in the
        ``X-Total-Count`` header and the next page in ``Link``. Filter with ``tag``."""
        records, total = await anyio.to_thread.run_sync(
            lambda: appliance.files.list(user, tag=tag, limit=limit, offset=offset)
        )
        headers = next_page("/fileids", {"limit": limit, "tag": tag}, offset, len(records), total)
        return Response([file_document(r) for r in records], headers=headers)

    @get("/file/{file_uuid:str}", summary="One file and its FITS header summary", responses=refusals(404))
    async def get_file(
        self, appliance: NamedDependency[Appliance], user: NamedDependency[str], file_uuid: FromPath[str]
    ) -> FileDocument:
        record = await anyio.to_thread.run_sync(appliance.files.get, user, file_uuid)
        return file_document(record)

    @route(
        "/download/{file_uuid:str}",
        http_method=["GET", "POST"],
        status_code=200,
        summary="Download a file",
        operation_class=file_operation(*sorted({*MEDIA_TYPES.values(), "application/gzip"})),
        responses=refusals(404, 416),
    )
    async def download(
        self,
        request: Request,
        appliance: NamedDependency[Appliance],
        user: NamedDependency[str],
        file_uuid: FromPath[str],
    ) -> Stream | Response:
        """Streams the file under its original name; honours a single ``Range`` (and ``If-Range``)."""
        record, path = await anyio.to_thread.run_sync(appliance.files.open_path, user, file_uuid)
        return stream_file(
            path,
            record.size_bytes,
            filename=record.filename_orig,
            media_type=MEDIA_TYPES.get(record.fileext, "application/gzip"),
            etag=record.sha256,
            range_header=request.headers.get("range"),
            if_range=request.headers.get("if-range"),
        )

    @route(
        "/download",
        http_method=["GET", "POST"],
        status_code=302,
        summary="Download by uuid given as a parameter",
        responses=refusals(413),
    )
    async def download_by_parameter(self, request: Request, uuid: FromQuery[str | None] = None) -> Redirect:
        """caesar-rest's form: ``uuid`` in the query or a form field; redirects to /download/<uuid>."""
        if uuid is None and request.method == "POST":
            try:
                uuid = (await request.form()).get("uuid")
            except (UnicodeDecodeError, LookupError) as exc:  # a field not in UTF-8 or in an unknown charset
                raise InvalidRequest("invalid_request", f"the form cannot be read: {exc}") from None
        if not uuid:
            raise InvalidRequest("missing_uuid", "give the file's uuid as the 'uuid' parameter")
        return Redirect(f"{API}/download/{quote(uuid, safe='')}")  # never another path: "../delete/<uuid>"

    @route(
        "/delete/{file_uuid:str}",
        http_method=["GET", "POST"],
        status_code=200,
        summary="Delete a file",
        opt=CHANGES_STATE,
        responses=refusals(403, 404, 409),
    )
    async def delete(
        self, appliance: NamedDependency[Appliance], user: NamedDependency[str], file_uuid: FromPath[str]
    ) -> StatusReply:
        """Refused with 409 while a pending or running job uses the file."""
        await anyio.to_thread.run_sync(appliance.files.delete, user, file_uuid)
        return StatusReply(status="File deleted and removed from DB")
