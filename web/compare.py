"""Comparing two finders on the same image: POST /compare and the comparison's products."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import anyio.to_thread
import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.response import Stream
from msgspec import Meta

from appliance.catalogs import KINDS
from appliance.compare import TABLE_FORMATS, document
from appliance.core import Appliance
from appliance.models import Comparison
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


class Counts(msgspec.Struct):
    matched: int
    only_a: int
    only_b: int


class Quantiles(msgspec.Struct):
    median: float | None
    p16: float | None
    p84: float | None


class ComparisonDocument(msgspec.Struct):
    compare_id: str
    jobs: list[str]
    kind: str
    radius_arcsec: float
    created: str
    counts: Counts
    flux_ratio: Quantiles  # B/A over the matched pairs
    offset_arcsec: Quantiles
    apps: list[str]


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
        operation_class=file_operation(*sorted({MEDIA_TYPES[f".{suffix}"] for suffix in TABLE_FORMATS.values()})),
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
        component numbers and fluxes, flux ratio B/A, offsets. ``format``: votable or csv."""
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
        """Matched pairs green, only in A red, only in B blue; ICRS."""
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
