"""Comparing two finders on the same image, or a finder with a published catalog: POST /compare, POST
/compare/catalog and the comparison's products."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import anyio.to_thread
import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIMediaType, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.response import Stream
from msgspec import Meta

from appliance.catalogs import KINDS
from appliance.compare import TABLE_FORMATS, document
from appliance.core import Appliance
from appliance.errors import UnsupportedType
from appliance.models import Comparison
from appliance.uploaded_catalogs import FORMATS as CATALOG_FORMATS
from appliance.uploaded_catalogs import MAX_BYTES as MAX_CATALOG_BYTES
from web.downloads import file_operation
from web.errors import refusals
from web.files import API, LIST_HEADERS, StatusReply, next_page
from web.idempotency import IDEMPOTENT, IdempotentOperation
from web.jobs import MEDIA_TYPES, send
from web.params import Limit, Offset, json_object_body


class CompareRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Two finished jobs on the same image, and how to match their catalogs."""

    jobs: Annotated[list[str], Meta(min_length=2, max_length=2, description="The ids of job A and job B")]
    radius_arcsec: (
        Annotated[float, Meta(gt=0, description="The match radius (default: the image's beam major axis)")] | None
    ) = None
    kind: Literal[KINDS] = "components"  # type: ignore[valid-type]

    error_codes: ClassVar[dict[str, str]] = {"radius_arcsec": "invalid_radius"}


@dataclass
class CatalogUpload(IdempotentOperation):
    """POST /compare/catalog's body, as ``comparison_form`` reads it."""

    def __post_init__(self) -> None:
        super().__post_init__()
        text = OpenAPIType.STRING
        form = Schema(
            type=OpenAPIType.OBJECT,
            properties={
                "job": Schema(type=text, description="The id of job A"),
                "catalog": Schema(
                    type=text,
                    format=OpenAPIFormat.BINARY,
                    description="The catalog file (side B): " + ", ".join(sorted(CATALOG_FORMATS)),
                ),
                "radius_arcsec": Schema(type=text, description="The match radius (default: the beam major axis)"),
                "kind": Schema(type=text, enum=list(KINDS), description="Job A's islands or components"),
            },
            required=["job", "catalog"],
        )
        self.request_body = RequestBody(required=True, content={"multipart/form-data": OpenAPIMediaType(schema=form)})


@dataclass(frozen=True)
class ComparisonForm:
    job: str | None
    job_b: str | None  # the dashboard's form: B is a job
    filename: str | None
    content: bytes
    radius_arcsec: float | None
    kind: str


async def comparison_form(request: Request) -> ComparisonForm:
    """The fields of a comparison sent as a form: job A, the catalog file (or, from the dashboard, job B), radius
    and kind."""
    if request.content_type[0] not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise UnsupportedType(
            "unsupported_media_type", "send multipart/form-data with the fields 'job' and 'catalog' (the file)"
        )
    form = await request.form()
    catalog = form.get("catalog")
    catalog = catalog if isinstance(catalog, UploadFile) and catalog.filename else None
    radius = form.get("radius_arcsec") or None
    if radius is not None:
        try:
            radius = float(radius) if isinstance(radius, str) else math.nan
        except ValueError:
            radius = math.nan
    job, job_b, kind = form.get("job"), form.get("job_b"), form.get("kind") or "components"
    return ComparisonForm(job if isinstance(job, str) else None, job_b if isinstance(job_b, str) else None,
                          catalog.filename if catalog else None, await catalog.read() if catalog else b"", radius,
                          kind if isinstance(kind, str) else "")  # fmt: skip


class Counts(msgspec.Struct):
    matched: int
    only_a: int
    only_b: int


class Quantiles(msgspec.Struct):
    median: float | None
    p16: float | None
    p84: float | None


class CatalogColumns(msgspec.Struct):
    ra: str
    dec: str
    flux: str | None


class UploadedCatalog(msgspec.Struct):
    """Side B when it is an uploaded catalog."""

    name: str
    rows: int
    outside_image: Annotated[int, Meta(description="Rows outside the image or on blank pixels, left out")]
    columns: Annotated[CatalogColumns, Meta(description="The catalog's columns taken as RA, Dec and flux")]


class ComparisonDocument(msgspec.Struct, omit_defaults=True):
    compare_id: str
    jobs: Annotated[list[str], Meta(description="Job A, then job B when B is a job")]
    kind: str
    radius_arcsec: float
    created: str
    counts: Counts
    flux_ratio: Quantiles  # B/A over the matched pairs
    offset_arcsec: Quantiles
    apps: Annotated[list[str], Meta(description="The app of each job")]
    catalog: UploadedCatalog | None = None


def comparison_document(comparison: Comparison) -> ComparisonDocument:
    return msgspec.convert(document(comparison), ComparisonDocument)


class CompareController(Controller):
    path = API
    tags = ["compare"]

    @post(
        "/compare",
        status_code=201,
        opt=IDEMPOTENT,
        operation_class=IdempotentOperation,
        summary="Compare two finished jobs on the same image",
        before_request=json_object_body,
        responses=refusals(403, 404, 409, 413, 422, 507),
    )
    async def create(
        self, data: JSONBody[CompareRequest], appliance: NamedDependency[Appliance], user: NamedDependency[str]
    ) -> ComparisonDocument:
        """``{"jobs": ["<job A>", "<job B>"], "radius_arcsec": 6.5, "kind": "components"}``: a one-to-one
        cross-match within the radius (default: the image's beam major axis). The reply gives the counts
        (matched, only_a, only_b) and the flux ratio B/A and offsets of the matched pairs."""
        comparison = await anyio.to_thread.run_sync(
            lambda: appliance.comparisons.create(user, data.jobs, data.radius_arcsec, data.kind)
        )
        return comparison_document(comparison)

    @post(
        "/compare/catalog",
        status_code=201,
        opt=IDEMPOTENT,
        operation_class=CatalogUpload,
        summary="Compare a finished job with a catalog made elsewhere",
        request_max_body_size=MAX_CATALOG_BYTES + (64 << 10),
        responses=refusals(403, 404, 409, 413, 415, 422, 507),
    )
    async def create_with_catalog(
        self, request: Request, appliance: NamedDependency[Appliance], user: NamedDependency[str]
    ) -> ComparisonDocument:
        """multipart/form-data: ``job`` (job A), ``catalog`` (the file: .vot, .xml, .csv, .ecsv, .fits or .fit),
        optional ``radius_arcsec`` and ``kind``. Positions are found by their UCDs (pos.eq.ra, pos.eq.dec) or usual
        names (ra, RAJ2000, ...; degrees unless the column has a unit, or sexagesimal), the flux likewise (int_flux,
        total_flux, Fint, S_int, ...; Jy unless the column has a unit); the catalog's rows outside the image take no
        part. A catalog without positions is refused with 422 naming what is missing."""
        form = await comparison_form(request)
        comparison = await anyio.to_thread.run_sync(
            lambda: appliance.comparisons.create_with_catalog(
                user, form.job, form.filename, form.content, form.radius_arcsec, form.kind
            )
        )
        return comparison_document(comparison)

    @get(
        "/comparisons",
        summary="The caller's comparisons, newest first",
        response_headers=LIST_HEADERS,
        responses=refusals(),
    )
    async def list_comparisons(
        self,
        appliance: NamedDependency[Appliance],
        user: NamedDependency[str],
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> Response[list[ComparisonDocument]]:
        rows, total = await anyio.to_thread.run_sync(lambda: appliance.comparisons.list(user, limit, offset))
        headers = next_page("/comparisons", {"limit": limit}, offset, len(rows), total)
        return Response([comparison_document(c) for c in rows], headers=headers)

    @get("/compare/{compare_id:str}", summary="A comparison's summary", responses=refusals(404))
    async def get_comparison(
        self, appliance: NamedDependency[Appliance], user: NamedDependency[str], compare_id: FromPath[str]
    ) -> ComparisonDocument:
        return comparison_document(await anyio.to_thread.run_sync(appliance.comparisons.get, user, compare_id))

    @get(
        "/compare/{compare_id:str}/table",
        summary="The comparison table",
        operation_class=file_operation(
            *sorted({MEDIA_TYPES[f".{name.rsplit('.', 1)[-1]}"] for name in TABLE_FORMATS.values()})
        ),
        responses=refusals(404, 416),
    )
    async def table(
        self,
        request: Request,
        appliance: NamedDependency[Appliance],
        user: NamedDependency[str],
        compare_id: FromPath[str],
        format: FromQuery[Literal[tuple(TABLE_FORMATS)]] = "votable",  # type: ignore[valid-type]
    ) -> Stream | Response:
        """One row per matched pair, then the rows only A has, then those only B has: class, position, both
        component numbers (for an uploaded catalog, its row number) and fluxes, flux ratio B/A, offsets.
        ``format``: votable, csv or json."""
        path = await anyio.to_thread.run_sync(
            appliance.comparisons.product, user, compare_id, f"comparison.{TABLE_FORMATS[format]}"
        )
        return send(request, path)

    @get(
        "/compare/{compare_id:str}/regions",
        summary="DS9 regions coloured by class",
        operation_class=file_operation("text/plain"),
        responses=refusals(404, 416),
    )
    async def regions(
        self, request: Request, appliance: NamedDependency[Appliance], user: NamedDependency[str],
        compare_id: FromPath[str],
    ) -> Stream | Response:  # fmt: skip
        """Matched pairs green, only in A red, only in B blue (the dashboard's colours); ICRS."""
        path = await anyio.to_thread.run_sync(appliance.comparisons.product, user, compare_id, "comparison.reg")
        return send(request, path)

    @get(
        "/compare/{compare_id:str}/plot",
        summary="Flux B against A, and offsets (PNG)",
        operation_class=file_operation("image/png"),
        responses=refusals(404, 416),
    )
    async def plot(
        self, request: Request, appliance: NamedDependency[Appliance], user: NamedDependency[str],
        compare_id: FromPath[str],
    ) -> Stream | Response:  # fmt: skip
        path = await anyio.to_thread.run_sync(appliance.comparisons.product, user, compare_id, "comparison.png")
        return send(request, path)

    @delete("/compare/{compare_id:str}", status_code=200, summary="Delete a comparison", responses=refusals(403, 404))
    async def delete_comparison(
        self, appliance: NamedDependency[Appliance], user: NamedDependency[str], compare_id: FromPath[str]
    ) -> StatusReply:
        await anyio.to_thread.run_sync(appliance.comparisons.delete, user, compare_id)
        return StatusReply(status=f"comparison {compare_id} deleted")
