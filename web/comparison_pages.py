"""The dashboard's comparisons: the list with a form for a new one (two finished jobs on one image, or a job and a
catalog file), a comparison's page (counts, the three classes over the image in the viewer, the table, the plots),
and deleting one."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any
from urllib.parse import urlencode

import anyio.to_thread
import numpy as np
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Redirect, Template

from appliance.compare import CLASSES, COLOURS, MARKERS, document
from appliance.core import Appliance
from appliance.errors import ApplianceError, InvalidRequest, NotFound
from appliance.models import Comparison
from appliance.quicklook import VIEW_COLORMAPS, VIEW_STRETCHES
from appliance.uploaded_catalogs import FORMATS as CATALOG_FORMATS
from appliance.uploaded_catalogs import MAX_BYTES as MAX_CATALOG_BYTES
from web.compare import comparison_form
from web.dashboard import PAGE_SIZE, page
from web.errors import http_status_of
from web.params import PageNumber

TABLE_PAGE = 50
Shown = Annotated[str | None, QueryParameter(name="class", description="matched, only_a or only_b")]
CLASS_LABELS = {"matched": "matched", "only_a": "only in A", "only_b": "only in B"}
LEGEND = [{"name": c, "label": CLASS_LABELS[c], "color": COLOURS[c], "shape": MARKERS[c]} for c in CLASSES]


def _sides(appliance: Appliance, user: str, comparison: Comparison) -> dict[str, Any]:
    """What A and B are, as the pages name them: the job (app, short id) or the catalog's name; and A's image."""
    summary = comparison.summary
    jobs = {}
    for side, job_id in (("a", comparison.job_a), ("b", comparison.job_b)):
        if job_id:
            try:
                jobs[side] = appliance.jobs.get(user, job_id)
            except NotFound:
                jobs[side] = None
    try:
        image = appliance.files.get(user, jobs["a"].data_inputs) if jobs.get("a") else None
    except NotFound:
        image = None
    catalog = summary.get("catalog")
    apps = summary.get("apps", [])
    a = {"job_id": comparison.job_a, "label": f"{apps[0] if apps else 'job'} {comparison.job_a[:8]}"}
    if catalog:
        b = {"job_id": None, "label": catalog["name"]}
    else:
        b = {"job_id": comparison.job_b, "label": f"{apps[1] if len(apps) > 1 else 'job'} {comparison.job_b[:8]}"}
    return {"a": a, "b": b, "image": image}


def comparison_rows(appliance: Appliance, user: str, comparisons: list[Comparison]) -> list[dict[str, Any]]:
    return [{**document(c), **_sides(appliance, user, c)} for c in comparisons]


def list_context(appliance: Appliance, user: str, page_number: int, chosen_a: str | None = None) -> dict[str, Any]:
    comparisons, total = appliance.comparisons.list(user, limit=PAGE_SIZE, offset=(page_number - 1) * PAGE_SIZE)
    finished, _ = appliance.jobs.list(user, state="SUCCESS", limit=1000)
    images: dict[str, dict[str, Any]] = {}
    for job in finished:
        if job.data_inputs not in images:
            try:
                name = appliance.files.get(user, job.data_inputs).filename_orig
            except NotFound:
                name = "a deleted image"
            images[job.data_inputs] = {"name": name, "jobs": []}
        images[job.data_inputs]["jobs"].append(job)
    a_job = next((job for job in finished if job.id == chosen_a), None)
    return {
        "comparisons": comparison_rows(appliance, user, comparisons),
        "images": list(images.values()),
        "chosen_a": a_job.id if a_job else None,
        "b_images": [images[a_job.data_inputs]] if a_job else list(images.values()),
        "catalog_formats": ", ".join(sorted(CATALOG_FORMATS)),
        "legend": LEGEND,
        "page": page_number,
        "pages": max(1, math.ceil(total / PAGE_SIZE)),
        "total": total,
        "page_query": lambda n: urlencode({"page": n}),
    }


def table_context(appliance: Appliance, user: str, comparison_id: str, shown: str | None,
                  page_number: int) -> dict[str, Any]:  # fmt: skip
    from astropy.table import Table

    comparison = appliance.comparisons.get(user, comparison_id)
    table = Table.read(appliance.comparisons.product(user, comparison_id, "comparison.vot"))
    if shown in CLASSES:
        table = table[table["class"] == shown]
    else:
        shown = None
    total = len(table)
    pages = max(1, math.ceil(total / TABLE_PAGE))
    page_number = min(max(1, page_number), pages)
    start = (page_number - 1) * TABLE_PAGE
    filters = {"class": shown} if shown else {}
    return {
        "comparison": document(comparison),
        "rows": [
            {
                name: math.nan if value is np.ma.masked else value
                for name, value in zip(table.colnames, row, strict=True)
            }
            for row in table[start : start + TABLE_PAGE]
        ],  # a VOTable's empty cells (NaN when written) are masked
        "shown": shown,
        "legend": LEGEND,
        "colours": COLOURS,
        "markers": MARKERS,
        "class_labels": CLASS_LABELS,
        "class_filters": [(None, "all"), *CLASS_LABELS.items()],
        "page": page_number,
        "pages": pages,
        "total": total,
        "page_query": lambda n: urlencode({**filters, "page": n}),
    }


def comparison_context(appliance: Appliance, user: str, comparison_id: str, shown: str | None = None,
                       page_number: int = 1) -> dict[str, Any]:  # fmt: skip
    comparison = appliance.comparisons.get(user, comparison_id)
    sides = _sides(appliance, user, comparison)
    context = {**table_context(appliance, user, comparison_id, shown, page_number), **sides,
               "classes": json.dumps(LEGEND)}  # fmt: skip
    image = sides["image"]
    if image is not None:
        scale = (image.summary.get("pixel_scale_arcsec") or [1.0])[0]
        context.update(file=image, image_size_deg=max(image.summary["shape"]) * scale / 3600.0, layers=[],
                       colormaps=VIEW_COLORMAPS, stretches=VIEW_STRETCHES)  # fmt: skip
    return context


class ComparisonPagesController(Controller):
    include_in_schema = False

    @get("/comparisons", sync_to_thread=True)
    def comparisons(self, appliance: NamedDependency[Appliance], user: NamedDependency[str],
                    a: FromQuery[str | None] = None, page_number: PageNumber = 1) -> Template:  # fmt: skip
        return page("Comparisons", "Comparisons", "comparisons.html", **list_context(appliance, user, page_number, a))

    @post("/comparisons", request_max_body_size=MAX_CATALOG_BYTES + (64 << 10))
    async def create(self, request: Request, appliance: NamedDependency[Appliance],
                     user: NamedDependency[str]) -> Redirect | Template:  # fmt: skip
        """The form: job A, and job B or a catalog file."""
        form = await comparison_form(request)

        def compare() -> Comparison:
            if form.job_b:
                return appliance.comparisons.create(user, [form.job, form.job_b], form.radius_arcsec, form.kind)
            if form.filename:
                return appliance.comparisons.create_with_catalog(
                    user, form.job, form.filename, form.content, form.radius_arcsec, form.kind
                )
            raise InvalidRequest("missing_b", "choose job B, or a catalog file to compare job A with")

        try:
            comparison = await anyio.to_thread.run_sync(compare)
        except ApplianceError as exc:
            status = http_status_of(exc)
            context = await anyio.to_thread.run_sync(list_context, appliance, user, 1, form.job)
            return page("Comparisons", "Comparisons", "comparisons.html", status_code=status, form_error=exc.message,
                        **context)  # fmt: skip
        return Redirect(f"/comparisons/{comparison.id}", status_code=303)

    @get("/comparisons/{compare_id:str}", sync_to_thread=True)
    def comparison(self, appliance: NamedDependency[Appliance], user: NamedDependency[str],
                   compare_id: FromPath[str], shown: Shown = None,
                   page_number: PageNumber = 1) -> Template:  # fmt: skip
        context = comparison_context(appliance, user, compare_id, shown, page_number)
        return page(f"Comparison {compare_id[:8]}", "Comparisons", "comparison.html", **context)

    @get("/comparisons/{compare_id:str}/table", sync_to_thread=True)
    def table(self, appliance: NamedDependency[Appliance], user: NamedDependency[str], compare_id: FromPath[str],
              shown: Shown = None, page_number: PageNumber = 1) -> Template:  # fmt: skip
        context = table_context(appliance, user, compare_id, shown, page_number)
        return Template("fragments/comparison_table.html", context=context)

    @get("/comparisons/{compare_id:str}/delete", sync_to_thread=True)
    def confirm_delete(self, appliance: NamedDependency[Appliance], user: NamedDependency[str],
                       compare_id: FromPath[str]) -> Template:  # fmt: skip
        comparison = appliance.comparisons.get(user, compare_id)
        row = comparison_rows(appliance, user, [comparison])[0]
        return page("Delete", "Comparisons", "delete_comparison.html", comparison=row)

    @post("/comparisons/{compare_id:str}/delete", sync_to_thread=True)
    def delete(self, request: HTMXRequest, appliance: NamedDependency[Appliance], user: NamedDependency[str],
               compare_id: FromPath[str]) -> Redirect | Template:  # fmt: skip
        try:
            appliance.comparisons.delete(user, compare_id)
            message, kind, status = f"Comparison {compare_id[:8]} deleted.", "info", 200
        except ApplianceError as exc:
            message, kind, status = exc.message, "error", http_status_of(exc)
        context = {**list_context(appliance, user, 1), "message_kind": kind}
        if request.htmx:
            return Template("fragments/comparisons_table.html", context={**context, "table_message": message})
        if status != 200:
            return page("Comparisons", "Comparisons", "comparisons.html", status_code=status, message=message,
                        **context)  # fmt: skip
        return Redirect("/comparisons", status_code=303)
