"""The browser dashboard: server-rendered pages (Jinja2) that read without JavaScript, htmx fragments for the parts
that change, and live updates over server-sent events (web/events.py)."""

from __future__ import annotations

import math
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import numpy as np
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.exceptions import NotFoundException
from litestar.params import Body, FromPath, FromQuery, QueryParameter
from litestar.plugins.htmx import HTMXRequest
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import File, Redirect, Template
from litestar.template import TemplateConfig

from appliance import __version__
from appliance.apps import App
from appliance.catalogs import APPLIANCE_FLAG_BITS, sorted_page
from appliance.core import Appliance
from appliance.errors import ApplianceError, FilesRefused, InvalidOptions, NotFound
from appliance.jobs import JOB_LOG, job_document
from appliance.models import LIVE_JOB_STATES, TERMINAL_JOB_STATES
from appliance.quicklook import (
    VIEW_COLORMAPS,
    VIEW_STRETCHES,
    colorbar_png,
    layer_view,
    quicklook_png,
    view_fits,
    view_statistics,
    view_tile,
)
from web.errors import http_status_of
from web.params import PageNumber
from web.uploads import receive_upload

TEMPLATES = Path(__file__).with_name("templates")
PAGE_SIZE = 25
CATALOG_PAGE = 50
LOG_TAIL_BYTES = 64 << 10
CATALOG_COLUMNS = [
    ("component_id", "#"), ("iau_name", "name"), ("ra", "RA"), ("dec", "Dec"), ("peak_flux", "peak (mJy/beam)"),
    ("int_flux", "flux (mJy)"), ("snr", "S/N"), ("major", "major (″)"), ("minor", "minor (″)"), ("pa", "PA (°)"),
    ("major_deconv", "deconvolved major (″)"), ("minor_deconv", "deconvolved minor (″)"),
    ("pa_deconv", "deconvolved PA (°)"), ("local_rms", "rms (mJy/beam)"), ("flags", "flags"),
    ("appliance_flags", "checks"),
]  # fmt: skip
DECONVOLVED = {"major_deconv", "minor_deconv", "pa_deconv"}


def _bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(size) < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)


def _when(value: datetime | str | None) -> str:
    if value is None:
        return "—"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _duration(seconds: float) -> str:
    """42 s, 12 min 05 s, 3 h 20 min."""
    whole = round(seconds)
    if whole < 90:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def _mjy(value: float, digits: int = 3) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value * 1e3:.{digits}g}"


def _num(value: float) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.2f}"


def _sexagesimal(degrees: float, hours: bool) -> str:
    """RA as 17:27:45.42, Dec as -40:20:31.5 (rounded for reading; the IAU name truncates)."""
    if degrees is None or not math.isfinite(degrees):
        return "—"
    from astropy.coordinates import Angle

    angle = Angle(degrees, unit="deg")
    if hours:
        return angle.to_string(unit="hour", sep=":", precision=2, pad=True)
    return angle.to_string(unit="deg", sep=":", precision=1, pad=True, alwayssign=True)


def _register(engine: JinjaTemplateEngine) -> None:
    engine.engine.filters.update(bytes=_bytes, when=_when, mjy=_mjy, num=_num, duration=_duration,
                                 hms=lambda d: _sexagesimal(d, True), dms=lambda d: _sexagesimal(d, False))  # fmt: skip
    engine.engine.globals.update(version=__version__)


TEMPLATE_CONFIG = TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine, engine_callback=_register)


def option_groups(app: App) -> list[tuple[str, list[dict[str, Any]]]]:
    """The app's options as the form and the apps page show them: by category (and subcategory), in order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for name, option in app.describe().items():
        label = option["category"] + (f" / {option['subcategory']}" if option["subcategory"] else "")
        groups.setdefault(label, []).append({"name": name, **option})
    return list(groups.items())


def app_list(appliance: Appliance) -> list[dict[str, Any]]:
    result = []
    for app in appliance.apps.apps.values():
        availability = appliance.jobs.app_availability(app)
        result.append({"name": app.name, "title": app.title, "description": app.description,
                       "available": availability.available, "reason": availability.reason,
                       "runner": appliance.jobs.default_runner(app), "runners": appliance.jobs.app_runners(app),
                       "options": app.describe(), "groups": option_groups(app)})  # fmt: skip
    return result


def page(title: str, section: str, template: str, status_code: int = 200, **context: Any) -> Template:
    return Template(template, context={"title": title, "section": section, **context}, status_code=status_code)


def jobs_with_files(appliance: Appliance, user: str, jobs: list) -> list[dict[str, Any]]:
    names = {}
    for job in jobs:
        if job.data_inputs not in names:
            try:
                names[job.data_inputs] = appliance.files.get(user, job.data_inputs).filename_orig
            except NotFound:
                names[job.data_inputs] = None
    return [{**job_document(job), "file": names[job.data_inputs]} for job in jobs]


def overview_context(appliance: Appliance, user: str) -> dict[str, Any]:
    jobs, _ = appliance.jobs.list(user, limit=10)
    return {"counts": appliance.jobs.counts(user), "machine": appliance.machine(),
            "runners": appliance.engine.overview(), "jobs": jobs_with_files(appliance, user, jobs)}  # fmt: skip


def jobs_context(appliance: Appliance, user: str, state: str | None, app: str | None, tag: str | None,
                 page_number: int) -> dict[str, Any]:  # fmt: skip
    jobs, total = appliance.jobs.list(user, state=state or None, app=app or None, tag=tag or None,
                                      limit=PAGE_SIZE, offset=(page_number - 1) * PAGE_SIZE)  # fmt: skip
    filters = {k: v for k, v in (("state", state), ("app", app), ("tag", tag)) if v}
    return {
        "jobs": jobs_with_files(appliance, user, jobs),
        "page": page_number,
        "pages": max(1, math.ceil(total / PAGE_SIZE)),
        "total": total,
        "query": urlencode(filters),
        "page_query": lambda n: urlencode({**filters, "page": n}),
    }


_TERMINAL_CODES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


_REDRAWN = re.compile(r"[^\n]*(?:\r|\x1b\[1G)(?=[^\n])")  # a progress bar going back to its line's start


def readable_log(data: bytes) -> str:
    """Log bytes as text for a page: finders colour their output with terminal escape codes, and redraw a progress
    bar over itself on one line (of which a page shows the last drawing)."""
    text = _REDRAWN.sub("", data.decode("utf-8", errors="replace"))
    return _TERMINAL_CODES.sub("", text)


def log_tail(appliance: Appliance, job: Any) -> tuple[str, int]:
    """The end of the job's log (at most LOG_TAIL_BYTES, whole lines) and the byte where that text ends, from which
    the live page goes on."""
    path = appliance.jobs.folder(job) / JOB_LOG
    if not path.is_file():
        return "", 0
    with path.open("rb") as f:
        size = f.seek(0, 2)
        start = max(0, size - LOG_TAIL_BYTES)
        f.seek(start)
        data = whole_lines(f.read(size - start))
        return readable_log(data), start + len(data)


def whole_lines(data: bytes) -> bytes:
    """Up to the last newline: a line still being written (a colour code, a UTF-8 character cut in two) waits."""
    return data[: data.rfind(b"\n") + 1]


def catalog_context(appliance: Appliance, user: str, job_id: str, sort: str, order: str,
                    page_number: int) -> dict[str, Any]:  # fmt: skip
    from astropy.table import Table

    job, path = appliance.jobs.product(user, job_id, "catalog_components.fits")
    table = Table.read(path)
    shown = [(name, label) for name, label in CATALOG_COLUMNS if name in table.colnames
             and (name not in DECONVOLVED or np.isfinite(np.asarray(table[name], dtype=float)).any())]  # fmt: skip
    sort = sort if sort in dict(shown) else "int_flux"
    descending = order != "asc"
    total = len(table)
    pages = max(1, math.ceil(total / CATALOG_PAGE))
    page_number = min(max(1, page_number), pages)
    rows = sorted_page(table, sort, descending, (page_number - 1) * CATALOG_PAGE, CATALOG_PAGE)
    app = appliance.apps.get(job.app)
    return {
        "columns": shown,
        "shown": {name for name, _ in shown},
        "flag_legend": app.flag_legend,
        "flags_are_bits": app.flags_are_bits,
        "check_legend": APPLIANCE_FLAG_BITS,
        "app_name": app.title,
        "has_nested": bool(len(Table.read(path.with_name("catalog_nested.fits"))))
        if path.with_name("catalog_nested.fits").exists()
        else False,
        "rows": rows,
        "sort": sort,
        "descending": descending,
        "page": page_number,
        "pages": pages,
        "total": total,
        "first": (page_number - 1) * CATALOG_PAGE + 1,
        "last": min(total, page_number * CATALOG_PAGE),
        "n_components": total,
        "table_query": lambda n: urlencode({"sort": sort, "order": order, "page": n}),
    }


def status_context(appliance: Appliance, user: str, job: Any) -> dict[str, Any]:
    """The state block of a job page: the job and, until it has ended, how far it has got."""
    progress = appliance.jobs.progress(user, job.id) if job.state in LIVE_JOB_STATES else None
    return {"job": job_document(job), "progress": progress}


def job_context(appliance: Appliance, user: str, job_id: str, sort: str = "int_flux", order: str = "desc",
                page_number: int = 1) -> dict[str, Any]:  # fmt: skip
    job = appliance.jobs.get(user, job_id)
    try:
        file = appliance.files.get(user, job.data_inputs)
    except NotFound:
        file = None
    log, log_end = log_tail(appliance, job)
    context: dict[str, Any] = {**status_context(appliance, user, job), "file": file, "log": log, "log_end": log_end,
                               "live": job.state in LIVE_JOB_STATES}  # fmt: skip
    if job.state == "SUCCESS":
        context.update(catalog_context(appliance, user, job_id, sort, order, page_number))
        if file is not None:
            scale = (file.summary.get("pixel_scale_arcsec") or [1.0])[0]
            context["image_size_deg"] = max(file.summary["shape"]) * scale / 3600.0
            context.update(colormaps=VIEW_COLORMAPS, stretches=VIEW_STRETCHES,
                           layers=list(appliance.jobs.layers(user, job_id)))  # fmt: skip
    return context


class DashboardController(Controller):
    include_in_schema = False

    @get("/", sync_to_thread=True)
    def overview(self, appliance: NamedDependency[Appliance], user: NamedDependency[str]) -> Template:
        return page("Overview", "Overview", "overview.html", **overview_context(appliance, user))

    @get("/files", sync_to_thread=True)
    def files(self, appliance: NamedDependency[Appliance], user: NamedDependency[str],
              tag: FromQuery[str | None] = None,
              page_number: PageNumber = 1) -> Template:  # fmt: skip
        return page("Files", "Files", "files.html", **self._files_context(appliance, user, tag, page_number))

    @get("/files/table", sync_to_thread=True)
    def files_table(self, appliance: NamedDependency[Appliance], user: NamedDependency[str],
                    tag: FromQuery[str | None] = None,
                    page_number: PageNumber = 1) -> Template:  # fmt: skip
        return Template("fragments/files_table.html", context=self._files_context(appliance, user, tag, page_number))

    @staticmethod
    def _files_context(appliance: Appliance, user: str, tag: str | None, page_number: int) -> dict[str, Any]:
        records, total = appliance.files.list(user, tag=tag or None, limit=PAGE_SIZE,
                                              offset=(page_number - 1) * PAGE_SIZE)  # fmt: skip
        filters = {"tag": tag} if tag else {}
        settings = appliance.settings
        return {"inbox": settings.inbox_path if settings.inbox else None, "inbox_app": settings.inbox_app,
                "files": records, "tag": tag, "page": page_number, "pages": max(1, math.ceil(total / PAGE_SIZE)),
                "total": total, "query": urlencode({**filters, "page": page_number}),
                "page_query": lambda n: urlencode({**filters, "page": n})}  # fmt: skip

    @post("/files", request_max_body_size=None)
    async def upload(self, request: Request, appliance: NamedDependency[Appliance],
                     user: NamedDependency[str]) -> Redirect | Template:  # fmt: skip
        """The upload form without JavaScript (the page's script sends each file to the API with a progress bar)."""
        try:
            record = await receive_upload(request, appliance.files, user)
        except ApplianceError as exc:
            context = self._files_context(appliance, user, None, 1)
            return page("Files", "Files", "files.html", status_code=http_status_of(exc), message=exc.message,
                        message_kind="error", **context)  # fmt: skip
        return Redirect(f"/files/{record.uuid}", status_code=303)

    @get("/files/run", sync_to_thread=True)
    def run_tagged_page(self, appliance: NamedDependency[Appliance], user: NamedDependency[str], tag: FromQuery[str],
                        app: FromQuery[str | None] = None) -> Template:  # fmt: skip
        """The form to run a finder on every file with a tag: one job each."""
        return page(f"Run on “{tag}”", "Files", "run_tagged.html", apps=app_list(appliance),
                    **self._tagged_context(appliance, user, tag, app))  # fmt: skip

    @get("/files/run/form", sync_to_thread=True)
    def run_tagged_form(self, appliance: NamedDependency[Appliance], user: NamedDependency[str], tag: FromQuery[str],
                        app: FromQuery[str | None] = None) -> Template:  # fmt: skip
        return Template("fragments/options_form.html", context=self._tagged_context(appliance, user, tag, app))

    @post("/files/run", sync_to_thread=True)
    def run_tagged(self, request: HTMXRequest, appliance: NamedDependency[Appliance], user: NamedDependency[str],
                   tag: FromQuery[str],
                   data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.URL_ENCODED)]) -> Response | Template:  # fmt: skip
        """Submit the form for every file with the tag: all the jobs, then the jobs page of the tag; or none, with
        each refused file and why."""
        values = {k: v for k, v in data.items() if isinstance(v, str)}
        try:
            app = appliance.apps.get(str(data.get("app")))
            appliance.jobs.submit_tagged(user, app.name, app.schema.from_form(values), tag,
                                         runner=values.get("runner") or None)  # fmt: skip
        except ApplianceError as exc:
            context = self._tagged_context(appliance, user, tag, str(data.get("app")), values, exc)
            if request.htmx:
                return Template("fragments/options_form.html", context=context, status_code=http_status_of(exc))
            return page(f"Run on “{tag}”", "Files", "run_tagged.html", status_code=http_status_of(exc),
                        apps=app_list(appliance), **context)  # fmt: skip
        target = "/jobs?" + urlencode({"tag": tag})
        if request.htmx:
            return Response(None, status_code=200, headers={"HX-Redirect": target})
        return Redirect(target, status_code=303)

    def _tagged_context(self, appliance: Appliance, user: str, tag: str, app_name: str | None,
                        values: dict | None = None, refusal: ApplianceError | None = None) -> dict[str, Any]:  # fmt: skip
        files, total = appliance.files.list(user, tag=tag, limit=PAGE_SIZE)
        query = urlencode({"tag": tag})
        return {"tag": tag, "files": files, "total": total,
                **self._form_context(appliance, app_name, f"/files/run?{query}", f"/files/run/form?{query}", values,
                                     refusal)}  # fmt: skip

    @get("/files/{file_uuid:str}", sync_to_thread=True)
    def file(self, appliance: NamedDependency[Appliance], user: NamedDependency[str], file_uuid: FromPath[str],
             app: FromQuery[str | None] = None, again: FromQuery[str | None] = None) -> Template:  # fmt: skip
        """The image: its header, quicklook, jobs and the form to run a finder on it. With ``again`` (a job's id)
        the form holds that job's app, options and tag, to change and run."""
        record = appliance.files.get(user, file_uuid)
        values, notice = None, ""
        if again is not None:
            earlier = appliance.jobs.get(user, again)
            app = earlier.app
            values = {**{k: v for k, v in earlier.options.items() if v is not None}, "tag": earlier.tag or ""}
            notice = (f"The options of job {earlier.id[:8]}, submitted {earlier.submit_date:%Y-%m-%d %H:%M} UTC: "
                      "change them and run it again.")  # fmt: skip
        return page(record.filename_orig, "Files", "file.html", apps=app_list(appliance),
                    jobs=jobs_with_files(appliance, user, appliance.jobs.list(user, limit=1000, file_uuid=file_uuid)[0]),
                    earlier=appliance.files.earlier_copy(record),
                    **self._file_form(appliance, record, app, values), notice=notice)  # fmt: skip

    def _file_form(self, appliance: Appliance, record: Any, app_name: str | None, values: dict | None = None,
                   refusal: ApplianceError | None = None) -> dict[str, Any]:  # fmt: skip
        return {"file": record, **self._form_context(appliance, app_name, f"/files/{record.uuid}/run",
                                                     f"/files/{record.uuid}/form", values, refusal)}  # fmt: skip

    @staticmethod
    def _form_context(appliance: Appliance, app_name: str | None, action: str, form_url: str,
                      values: dict | None = None, refusal: ApplianceError | None = None) -> dict[str, Any]:  # fmt: skip
        """The generated form of an app's options, posted to ``action``; ``form_url`` gives it for another app. After
        a refusal it shows the values sent, each invalid option beside its field and each refused file."""
        apps = appliance.apps.apps
        if app_name not in apps:
            available = [a for a in apps.values() if appliance.jobs.app_availability(a).available]
            app_name = "aegean" if "aegean" in apps else (available or list(apps.values()))[0].name
        app = apps[app_name]
        fits = appliance.jobs.app_runners(app)
        runner = (values or {}).get("runner")
        if runner not in fits:
            runner = appliance.jobs.default_runner(app)
        availability = appliance.jobs.app_availability(app, runner)
        refused = refusal.files if isinstance(refusal, FilesRefused) else []
        errors = dict(refusal.problems) if isinstance(refusal, InvalidOptions) else {}
        for file in refused:
            errors.update(file.get("options") or {})
        return {"app": app, "groups": option_groups(app), "values": values or {}, "errors": errors,
                "error_message": refusal.message if refusal else "", "refused": refused, "action": action,
                "form_url": form_url, "app_available": availability.available, "app_reason": availability.reason,
                "app_runners": fits, "runner": runner}  # fmt: skip

    @get("/files/{file_uuid:str}/form", sync_to_thread=True)
    def options_form(self, appliance: NamedDependency[Appliance], user: NamedDependency[str],
                     file_uuid: FromPath[str], app: FromQuery[str | None] = None) -> Template:  # fmt: skip
        record = appliance.files.get(user, file_uuid)
        return Template("fragments/options_form.html", context=self._file_form(appliance, record, app))

    @post("/files/{file_uuid:str}/run", sync_to_thread=True)
    def run(self, request: HTMXRequest, appliance: NamedDependency[Appliance], user: NamedDependency[str],
            file_uuid: FromPath[str],
            data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.URL_ENCODED)]) -> Response | Template:  # fmt: skip
        """Submit the generated form: on success go to the job; otherwise show every problem next to its field."""
        record = appliance.files.get(user, file_uuid)
        app_name = data.get("app")
        values = {k: v for k, v in data.items() if isinstance(v, str)}
        try:
            app = appliance.apps.get(str(app_name))
            job = appliance.jobs.submit(user, app.name, app.schema.from_form(values), file_uuid,
                                        values.get("tag") or None, runner=values.get("runner") or None)  # fmt: skip
        except ApplianceError as exc:
            context = self._file_form(appliance, record, str(app_name), values, exc)
            status = 422 if isinstance(exc, InvalidOptions) else http_status_of(exc)
            if request.htmx:
                return Template("fragments/options_form.html", context=context, status_code=status)
            jobs = appliance.jobs.list(user, limit=1000, file_uuid=file_uuid)[0]
            return page(record.filename_orig, "Files", "file.html", status_code=status, apps=app_list(appliance),
                        jobs=jobs_with_files(appliance, user, jobs), **context)  # fmt: skip
        if request.htmx:
            return Response(None, status_code=200, headers={"HX-Redirect": f"/jobs/{job.id}"})
        return Redirect(f"/jobs/{job.id}", status_code=303)

    @get("/files/{file_uuid:str}/quicklook.png", sync_to_thread=True)
    def quicklook(self, appliance: NamedDependency[Appliance], user: NamedDependency[str],
                  file_uuid: FromPath[str]) -> File:  # fmt: skip
        record, source = appliance.files.open_path(user, file_uuid)
        return File(quicklook_png(record, source, appliance.settings.cache_dir), media_type="image/png",
                    content_disposition_type="inline")  # fmt: skip

    @get("/files/{file_uuid:str}/view.fits", sync_to_thread=True)
    def view(self, appliance: NamedDependency[Appliance], user: NamedDependency[str], file_uuid: FromPath[str],
             tile: FromQuery[int | None] = None) -> File:  # fmt: skip
        """The validated image as the sky viewer reads it (2-D; block-averaged when larger than 4096 pixels), or one
        of the tiles the viewer is given it as (``tile``: 0 to the statistics' tiles² - 1)."""
        record, source = appliance.files.open_path(user, file_uuid)
        return _fits_file(view_fits(record, source, appliance.settings.cache_dir), tile)

    @get("/files/{file_uuid:str}/view-statistics", sync_to_thread=True)
    def view_stats(self, appliance: NamedDependency[Appliance], user: NamedDependency[str],
                   file_uuid: FromPath[str]) -> dict[str, Any]:  # fmt: skip
        """The viewer copy's unit and the cuts the viewer offers (min/max, percentiles, zscale)."""
        record, source = appliance.files.open_path(user, file_uuid)
        return view_statistics(view_fits(record, source, appliance.settings.cache_dir))

    @get("/jobs/{job_id:str}/layers/{layer:str}/view.fits", sync_to_thread=True)
    def layer(self, appliance: NamedDependency[Appliance], user: NamedDependency[str], job_id: FromPath[str],
              layer: FromPath[str], tile: FromQuery[int | None] = None) -> File:  # fmt: skip
        """A map of the job on its image's grid (residual, background, rms, ...) as the sky viewer reads it, or one
        of its tiles."""
        return _fits_file(self._layer_copy(appliance, user, job_id, layer), tile)

    @get("/jobs/{job_id:str}/layers/{layer:str}/statistics", sync_to_thread=True)
    def layer_stats(self, appliance: NamedDependency[Appliance], user: NamedDependency[str], job_id: FromPath[str],
                    layer: FromPath[str]) -> dict[str, Any]:  # fmt: skip
        return view_statistics(self._layer_copy(appliance, user, job_id, layer))

    @staticmethod
    def _layer_copy(appliance: Appliance, user: str, job_id: str, layer: str) -> Path:
        source = appliance.jobs.layers(user, job_id).get(layer)
        if source is None:
            raise NotFoundException(f"job {job_id} has no map {layer!r}")
        record, image = appliance.files.open_path(user, appliance.jobs.get(user, job_id).data_inputs)
        copy = appliance.settings.cache_dir / "view" / f"job-{job_id}-{layer}.fits"
        return layer_view(record, image, source, copy)

    @get("/colorbar.png", sync_to_thread=True)
    def colorbar(self, colormap: FromQuery[str] = "grayscale") -> Response:
        if colormap not in VIEW_COLORMAPS:
            raise NotFoundException(f"no colour map {colormap!r}: one of {', '.join(VIEW_COLORMAPS)}")
        return Response(colorbar_png(colormap), media_type="image/png", headers={"Cache-Control": "max-age=86400"})

    @get("/files/{file_uuid:str}/delete", sync_to_thread=True)
    def confirm_delete(self, appliance: NamedDependency[Appliance], user: NamedDependency[str],
                       file_uuid: FromPath[str]) -> Template:  # fmt: skip
        return page("Delete", "Files", "delete_file.html", file=appliance.files.get(user, file_uuid))

    @post("/files/{file_uuid:str}/delete", sync_to_thread=True)
    def delete_file(self, request: HTMXRequest, appliance: NamedDependency[Appliance], user: NamedDependency[str],
                    file_uuid: FromPath[str]) -> Redirect | Template:  # fmt: skip
        try:
            record = appliance.files.get(user, file_uuid)
            appliance.files.delete(user, file_uuid)
            message, kind, status = f"{record.filename_orig} deleted.", "info", 200
        except ApplianceError as exc:
            message, kind, status = exc.message, "error", http_status_of(exc)
        context = {**self._files_context(appliance, user, None, 1), "message": message, "message_kind": kind}
        if request.htmx:
            return Template("fragments/files_table.html", context=context, status_code=200)
        if status != 200:
            return page("Files", "Files", "files.html", status_code=status, **context)
        return Redirect("/files", status_code=303)

    @get("/jobs", sync_to_thread=True)
    def jobs(self, appliance: NamedDependency[Appliance], user: NamedDependency[str],
             job_state: Annotated[str | None, QueryParameter(name="state")] = None, app: FromQuery[str | None] = None,
             tag: FromQuery[str | None] = None,
             page_number: PageNumber = 1) -> Template:  # fmt: skip
        context = jobs_context(appliance, user, job_state, app, tag, page_number)
        states = list(LIVE_JOB_STATES) + [s for s in TERMINAL_JOB_STATES if s != "ABORTED"]
        return page("Jobs", "Jobs", "jobs.html", state=job_state, app=app, tag=tag, states=states,
                    app_names=list(appliance.apps.apps), **context)  # fmt: skip

    @get("/jobs/{job_id:str}", sync_to_thread=True)
    def job(self, appliance: NamedDependency[Appliance], user: NamedDependency[str], job_id: FromPath[str],
            sort: FromQuery[str] = "int_flux", order: FromQuery[str] = "desc",
            page_number: PageNumber = 1) -> Template:  # fmt: skip
        context = job_context(appliance, user, job_id, sort, order, page_number)
        return page(f"Job {job_id[:8]}", "Jobs", "job.html", **context)

    @get("/jobs/{job_id:str}/results", sync_to_thread=True)
    def results(self, appliance: NamedDependency[Appliance], user: NamedDependency[str],
                job_id: FromPath[str]) -> Template:  # fmt: skip
        """Products, viewer, catalog and plots, fetched by the page when the job ends."""
        return Template("fragments/results.html", context=job_context(appliance, user, job_id))

    @get("/jobs/{job_id:str}/table", sync_to_thread=True)
    def table(self, appliance: NamedDependency[Appliance], user: NamedDependency[str], job_id: FromPath[str],
              sort: FromQuery[str] = "int_flux", order: FromQuery[str] = "desc",
              page_number: PageNumber = 1) -> Template:  # fmt: skip
        context = catalog_context(appliance, user, job_id, sort, order, page_number)
        return Template("fragments/catalog_table.html", context={"job": {"job_id": job_id}, **context})

    @get("/jobs/{job_id:str}/plots/{name:str}", sync_to_thread=True)
    def plot(self, appliance: NamedDependency[Appliance], user: NamedDependency[str], job_id: FromPath[str],
             name: FromPath[str]) -> File:  # fmt: skip
        if name not in ("flux-histogram.png", "source-counts.png"):
            raise NotFound("not_found", f"no plot {name}")
        return File(appliance.jobs.flux_plot(user, job_id, name), media_type="image/png",
                    content_disposition_type="inline")  # fmt: skip

    @post("/jobs/{job_id:str}/cancel", sync_to_thread=True)
    def cancel(self, request: HTMXRequest, appliance: NamedDependency[Appliance], user: NamedDependency[str],
               job_id: FromPath[str]) -> Redirect | Template:  # fmt: skip
        appliance.jobs.cancel(user, job_id)
        if request.htmx:
            return Template(
                "fragments/job_status.html", context=status_context(appliance, user, appliance.jobs.get(user, job_id))
            )
        return Redirect(f"/jobs/{job_id}", status_code=303)

    @get("/apps", sync_to_thread=True)
    def apps(self, appliance: NamedDependency[Appliance]) -> Template:
        return page("Apps", "Apps", "apps.html", apps=app_list(appliance), runners=appliance.engine.overview())


def _fits_file(view: Path, tile: int | None) -> File:
    """A viewer copy, or its tile ``tile`` (404 for a tile it does not have)."""
    if tile is not None:
        try:
            view = view_tile(view, tile)
        except IndexError:
            raise NotFoundException(f"the image has no tile {tile}") from None
    return File(view, media_type="application/fits", content_disposition_type="inline")
