"""Comparing two finders on the same image: POST /compare and the comparison's products."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Stream

from appliance.compare import TABLE_FORMATS, document
from appliance.core import Appliance
from appliance.errors import InvalidRequest
from web.files import API
from web.idempotency import IDEMPOTENT
from web.jobs import send
from web.params import Limit, Offset, json_object


class CompareController(Controller):
    path = API
    tags = ["compare"]

    @post("/compare", status_code=201, opt=IDEMPOTENT, summary="Compare two finished jobs on the same image")
    async def create(
        self, request: Request, appliance: NamedDependency[Appliance], user: NamedDependency[str]
    ) -> dict[str, Any]:
        """``{"jobs": ["<job A>", "<job B>"], "radius_arcsec": 6.5, "kind": "components"}``: a one-to-one
        cross-match within the radius (default: the image's beam major axis). The reply gives the counts
        (matched, only_a, only_b) and the flux ratio B/A and offsets of the matched pairs."""
        body = await json_object(request, '{"jobs": [a, b]}')
        comparison = await anyio.to_thread.run_sync(
            lambda: appliance.comparisons.create(
                user, body.get("jobs"), body.get("radius_arcsec"), body.get("kind", "components")
            )
        )
        return document(comparison)

    @get("/comparisons", summary="The caller's comparisons, newest first")
    async def list_comparisons(
        self,
        appliance: NamedDependency[Appliance],
        user: NamedDependency[str],
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> Response[list[dict[str, Any]]]:
        rows, total = await anyio.to_thread.run_sync(lambda: appliance.comparisons.list(user, limit, offset))
        return Response([document(c) for c in rows], headers={"X-Total-Count": str(total)})

    @get("/compare/{compare_id:str}", summary="A comparison's summary")
    async def get_comparison(
        self, appliance: NamedDependency[Appliance], user: NamedDependency[str], compare_id: FromPath[str]
    ) -> dict[str, Any]:
        return document(await anyio.to_thread.run_sync(appliance.comparisons.get, user, compare_id))

    @get("/compare/{compare_id:str}/table", summary="The comparison table")
    async def table(
        self,
        request: Request,
        appliance: NamedDependency[Appliance],
        user: NamedDependency[str],
        compare_id: FromPath[str],
        format: FromQuery[str] = "votable",
    ) -> Stream | Response:
        """One row per matched pair, then the rows only A has, then those only B has: class, position, both
        component numbers and fluxes, flux ratio B/A, offsets. ``format``: votable or csv."""
        if format not in TABLE_FORMATS:
            raise InvalidRequest("invalid_request", f"format is one of {', '.join(TABLE_FORMATS)}")
        path = await anyio.to_thread.run_sync(
            appliance.comparisons.product, user, compare_id, f"comparison.{TABLE_FORMATS[format]}"
        )
        return send(request, path)

    @get("/compare/{compare_id:str}/regions", summary="DS9 regions coloured by class")
    async def regions(
        self, request: Request, appliance: NamedDependency[Appliance], user: NamedDependency[str],
        compare_id: FromPath[str],
    ) -> Stream | Response:  # fmt: skip
        """Matched pairs green, only in A red, only in B blue; ICRS."""
        path = await anyio.to_thread.run_sync(appliance.comparisons.product, user, compare_id, "comparison.reg")
        return send(request, path)

    @get("/compare/{compare_id:str}/plot", summary="Flux B against A, and offsets (PNG)")
    async def plot(
        self, request: Request, appliance: NamedDependency[Appliance], user: NamedDependency[str],
        compare_id: FromPath[str],
    ) -> Stream | Response:  # fmt: skip
        path = await anyio.to_thread.run_sync(appliance.comparisons.product, user, compare_id, "comparison.png")
        return send(request, path)

    @delete("/compare/{compare_id:str}", status_code=200, summary="Delete a comparison")
    async def delete_comparison(
        self, appliance: NamedDependency[Appliance], user: NamedDependency[str], compare_id: FromPath[str]
    ) -> dict[str, str]:
        await anyio.to_thread.run_sync(appliance.comparisons.delete, user, compare_id)
        return {"status": f"comparison {compare_id} deleted"}
