"""caesar-rest's job routes (submit, list, status, cancel, outputs) and the extensions (delete, files, catalogs in
every format, region files, the log)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import anyio.to_thread
from litestar import Controller, Request, Response, delete, get, route
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Stream

from appliance.catalogs import KINDS, REGION_FORMATS, TABLE_FORMATS
from appliance.core import Appliance
from appliance.errors import ApplianceError, InvalidRequest
from appliance.jobs import JOB_LOG, job_document
from web.auth import CHANGES_STATE
from web.downloads import stream_file
from web.errors import error_response
from web.files import API
from web.idempotency import IDEMPOTENT
from web.params import Limit, Offset, json_object

MEDIA_TYPES = {
    ".gz": "application/gzip",
    ".json": "application/json",
    ".vot": "application/x-votable+xml",
    ".fits": "application/fits",
    ".csv": "text/csv",
    ".dat": "text/plain",
    ".reg": "text/plain",
    ".crtf": "text/plain",
    ".log": "text/plain",
    ".png": "image/png",
}


def send(request: Request, path: Path, filename: str | None = None) -> Stream | Response:
    size = path.stat().st_size
    return stream_file(
        path,
        size,
        filename=filename or path.name,
        media_type=MEDIA_TYPES.get(path.suffix, "application/octet-stream"),
        etag=f"{int(path.stat().st_mtime_ns)}-{size}",
        range_header=request.headers.get("range"),
        if_range=request.headers.get("if-range"),
    )


class JobsController(Controller):
    path = API
    tags = ["jobs"]

    @route("/job", http_method=["POST"], status_code=202, opt=IDEMPOTENT, summary="Submit a job")
    async def submit(
        self, request: Request, appliance: NamedDependency[Appliance], user: NamedDependency[str]
    ) -> Response:
        """``{"app": "aegean", "job_inputs": {...}, "data_inputs": "<file uuid>", "tag": "..."}``, optionally with
        ``walltime`` (seconds). Options are checked against the app's schema: every problem is listed under
        ``options`` in the 422 reply. Refusals carry ``state: "ABORTED"``, as in caesar-rest."""
        try:
            body = await json_object(request, '{"app": ..., "job_inputs": ..., "data_inputs": ...}')
            unknown = set(body) - {"app", "job_inputs", "data_inputs", "tag", "walltime"}
            if unknown:
                raise InvalidRequest("invalid_request", f"unknown field(s): {', '.join(sorted(unknown))}")
            job = await anyio.to_thread.run_sync(
                lambda: appliance.jobs.submit(
                    user,
                    body.get("app"),
                    body.get("job_inputs"),
                    body.get("data_inputs"),
                    body.get("tag"),
                    body.get("walltime"),
                )
            )
        except ApplianceError as exc:
            return error_response(request, exc, state="ABORTED")
        document = job_document(job)
        return Response(
            {
                **{
                    k: document[k]
                    for k in ("job_id", "submit_date", "app", "job_inputs", "data_inputs", "tag", "state", "status")
                },
                "options": job.options,
                "cores": job.cores,
            },
            status_code=202,
        )

    @get("/jobs", summary="List the caller's jobs")
    async def list_jobs(
        self,
        appliance: NamedDependency[Appliance],
        user: NamedDependency[str],
        job_state: Annotated[str | None, QueryParameter(name="state")] = None,
        app: FromQuery[str | None] = None,
        tag: FromQuery[str | None] = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> Response[list[dict[str, Any]]]:
        """A bare list (as caesar-rest), newest first; filter by ``state``, ``app``, ``tag``; total in
        ``X-Total-Count``, next page in ``Link``."""
        jobs, total = await anyio.to_thread.run_sync(
            lambda: appliance.jobs.list(user, state=job_state, app=app, tag=tag, limit=limit, offset=offset)
        )
        headers = {"X-Total-Count": str(total)}
        if offset + len(jobs) < total:
            query = {k: v for k, v in (("state", job_state), ("app", app), ("tag", tag)) if v is not None}
            headers["Link"] = (
                f'<{API}/jobs?{urlencode({**query, "limit": limit, "offset": offset + limit})}>; rel="next"'
            )
        return Response([job_document(job) for job in jobs], headers=headers)

    # on the event loop: the read takes ~12 us and waits for nothing but another lookup, where the hop to a worker
    # thread and back cost ~80 us, and 32 pollers kept 32 threads contending for the GIL
    @get("/job/{job_id:str}/status", summary="A job's state", sync_to_thread=False)
    def status(
        self, appliance: NamedDependency[Appliance], user: NamedDependency[str], job_id: FromPath[str]
    ) -> dict[str, Any]:
        return appliance.jobs.status(user, job_id)

    @get("/job/{job_id:str}", summary="A job, with its options and dates")
    async def get_job(
        self, appliance: NamedDependency[Appliance], user: NamedDependency[str], job_id: FromPath[str]
    ) -> dict[str, Any]:
        job = await anyio.to_thread.run_sync(appliance.jobs.get, user, job_id)
        return job_document(job)

    @route(
        "/job/{job_id:str}/cancel",
        http_method=["GET", "POST"],
        status_code=200,
        summary="Cancel a job",
        opt=CHANGES_STATE,
    )
    async def cancel(
        self, appliance: NamedDependency[Appliance], user: NamedDependency[str], job_id: FromPath[str]
    ) -> dict[str, Any]:
        """A pending job is cancelled at once; a running one is stopped (SIGTERM to its processes, SIGKILL after the
        grace period) and the reply comes when it has ended."""
        message = await anyio.to_thread.run_sync(appliance.jobs.cancel, user, job_id)
        job = await anyio.to_thread.run_sync(appliance.jobs.get, user, job_id)
        return {"job_id": job_id, "status": message, "state": job.state}

    @delete("/job/{job_id:str}", status_code=200, summary="Delete a job that has ended, with all its files")
    async def delete_job(
        self, appliance: NamedDependency[Appliance], user: NamedDependency[str], job_id: FromPath[str]
    ) -> dict[str, str]:
        await anyio.to_thread.run_sync(appliance.jobs.delete, user, job_id)
        return {"status": f"Job {job_id} deleted with its files"}

    async def _product(
        self, request: Request, appliance: Appliance, user: str, job_id: str, name: str, filename: str | None = None
    ) -> Stream | Response:
        job, path = await anyio.to_thread.run_sync(appliance.jobs.product, user, job_id, name)
        return send(request, path, filename or f"{job.app}_{job.id[:8]}_{name}")

    @get("/job/{job_id:str}/output", summary="The whole job folder as tar.gz")
    async def output(
        self, request: Request, appliance: NamedDependency[Appliance], user: NamedDependency[str], job_id: FromPath[str]
    ) -> Stream | Response:
        """For every ended job: succeeded, failed, timed out or cancelled. 202 while it has not ended."""
        return await self._product(request, appliance, user, job_id, f"job_{job_id}.tar.gz", f"job_{job_id}.tar.gz")

    @staticmethod
    async def _json_body(appliance: Appliance, user: str, job_id: str, name: str) -> Response:
        _, path = await anyio.to_thread.run_sync(appliance.jobs.product, user, job_id, name)
        return Response(path.read_bytes(), media_type="application/json")

    @get("/job/{job_id:str}/sources", summary="The island catalog as JSON")
    async def sources(
        self, appliance: NamedDependency[Appliance], user: NamedDependency[str], job_id: FromPath[str]
    ) -> Response:
        return await self._json_body(appliance, user, job_id, "catalog_islands.json")

    @get("/job/{job_id:str}/source-components", summary="The component catalog as JSON")
    async def source_components(
        self, appliance: NamedDependency[Appliance], user: NamedDependency[str], job_id: FromPath[str]
    ) -> Response:
        return await self._json_body(appliance, user, job_id, "catalog_components.json")

    @get("/job/{job_id:str}/output-sources", summary="The island catalog as an ASCII table file")
    async def output_sources(
        self, request: Request, appliance: NamedDependency[Appliance], user: NamedDependency[str], job_id: FromPath[str]
    ) -> Stream | Response:
        return await self._product(request, appliance, user, job_id, "catalog_islands.dat")

    @get("/job/{job_id:str}/output-components", summary="The component catalog as an ASCII table file")
    async def output_components(
        self, request: Request, appliance: NamedDependency[Appliance], user: NamedDependency[str], job_id: FromPath[str]
    ) -> Stream | Response:
        return await self._product(request, appliance, user, job_id, "catalog_components.dat")

    @get("/job/{job_id:str}/preview", summary="The overlay picture, base64 in JSON")
    async def preview(
        self, appliance: NamedDependency[Appliance], user: NamedDependency[str], job_id: FromPath[str]
    ) -> dict[str, str]:
        _, path = await anyio.to_thread.run_sync(appliance.jobs.product, user, job_id, "overlay.png")
        return {"status": "", "image": base64.b64encode(path.read_bytes()).decode()}

    @get("/job/{job_id:str}/output-plot", summary="The overlay picture (PNG)")
    async def output_plot(
        self, request: Request, appliance: NamedDependency[Appliance], user: NamedDependency[str], job_id: FromPath[str]
    ) -> Stream | Response:
        return await self._product(request, appliance, user, job_id, "overlay.png")

    @get("/job/{job_id:str}/catalog", summary="A catalog in a chosen format")
    async def catalog(
        self,
        request: Request,
        appliance: NamedDependency[Appliance],
        user: NamedDependency[str],
        job_id: FromPath[str],
        kind: FromQuery[str] = "components",
        format: FromQuery[str] = "votable",
    ) -> Stream | Response:
        """``kind``: islands or components; ``format``: votable, fits, csv, json or ascii."""
        if kind not in KINDS or format not in TABLE_FORMATS:
            raise InvalidRequest(
                "invalid_request", f"kind is one of {', '.join(KINDS)}; format one of {', '.join(TABLE_FORMATS)}"
            )
        return await self._product(request, appliance, user, job_id, f"catalog_{kind}.{TABLE_FORMATS[format]}")

    @get("/job/{job_id:str}/regions", summary="Region file of the components")
    async def regions(
        self,
        request: Request,
        appliance: NamedDependency[Appliance],
        user: NamedDependency[str],
        job_id: FromPath[str],
        format: FromQuery[str] = "ds9",
    ) -> Stream | Response:
        """Each component's FWHM ellipse in sky coordinates (ICRS), labelled with its id. ``format``: ds9 or crtf
        (CASA)."""
        if format not in REGION_FORMATS:
            raise InvalidRequest("invalid_request", f"format is one of {', '.join(REGION_FORMATS)}")
        return await self._product(request, appliance, user, job_id, f"regions.{REGION_FORMATS[format]}")

    @get("/job/{job_id:str}/files", summary="The files in the job's folder")
    async def files(
        self, appliance: NamedDependency[Appliance], user: NamedDependency[str], job_id: FromPath[str]
    ) -> list[dict[str, Any]]:
        _, paths = await anyio.to_thread.run_sync(appliance.jobs.files_of, user, job_id)
        return [{"name": p.name, "size_bytes": p.stat().st_size} for p in paths]

    @get("/job/{job_id:str}/files/{name:str}", summary="One file of the job's folder")
    async def file(
        self,
        request: Request,
        appliance: NamedDependency[Appliance],
        user: NamedDependency[str],
        job_id: FromPath[str],
        name: FromPath[str],
    ) -> Stream | Response:
        _, path = await anyio.to_thread.run_sync(appliance.jobs.file, user, job_id, name)
        return send(request, path)

    @get("/job/{job_id:str}/log", summary="The job's log")
    async def job_log(
        self,
        appliance: NamedDependency[Appliance],
        user: NamedDependency[str],
        job_id: FromPath[str],
        offset: Offset = 0,
    ) -> Response:
        """Plain text: what the appliance did and everything the finder printed. ``offset`` (bytes) returns only
        what came after it; ``X-Log-Size`` gives the size to ask from next time."""
        job = await anyio.to_thread.run_sync(appliance.jobs.get, user, job_id)
        path = appliance.jobs.folder(job) / JOB_LOG
        data, size = b"", 0
        if path.is_file():
            with path.open("rb") as f:
                size = f.seek(0, 2)
                f.seek(min(offset, size))
                data = f.read()
                size = f.tell()
        return Response(data, media_type="text/plain; charset=utf-8", headers={"X-Log-Size": str(size)})
