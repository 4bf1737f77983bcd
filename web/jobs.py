"""caesar-rest's job routes (submit, list, status, cancel, outputs) and the extensions (delete, files, catalogs in
every format, region files, the log)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio.to_thread
import msgspec
from litestar import Controller, MediaType, Request, Response, delete, get, post, route
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.openapi.spec import Reference
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.response import Stream
from msgspec import Meta

from appliance.catalogs import KINDS, REGION_FORMATS, TABLE_FORMATS
from appliance.core import Appliance
from appliance.errors import ApplianceError
from appliance.jobs import JOB_LOG, job_document
from appliance.models import LIVE_JOB_STATES, TERMINAL_JOB_STATES
from web.auth import CHANGES_STATE
from web.downloads import file_operation, stream_file
from web.errors import error_response, refusals
from web.files import API, LIST_HEADERS, StatusReply, next_page
from web.idempotency import IDEMPOTENT, IdempotentOperation
from web.params import Limit, Offset, json_object_body

JobState = Literal[LIVE_JOB_STATES + TERMINAL_JOB_STATES]  # type: ignore[valid-type]


class JobRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A job to submit, in caesar-rest's fields."""

    app: Annotated[str, Meta(description="The app (source finder) to run: one of GET /apps")]
    data_inputs: Annotated[str, Meta(description="The uuid of the uploaded image to run it on")]
    job_inputs: Annotated[
        dict[str, Any] | None, Meta(description="The app's options by name (GET /app/<app>/describe); others default")
    ] = None
    tag: str | None = None
    walltime: Annotated[float, Meta(gt=0, description="Seconds the job may run (default: the setting)")] | None = None
    runner: (
        Annotated[str, Meta(description="Where it runs: one of GET /runners (default: the app's runner)")] | None
    ) = None


class TaggedJobsRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Jobs to submit: one per file with a tag."""

    app: Annotated[str, Meta(description="The app (source finder) to run: one of GET /apps")]
    tag: Annotated[str, Meta(description="Run it on every file with this tag (GET /fileids?tag=...); the jobs get it")]
    job_inputs: Annotated[
        dict[str, Any] | None, Meta(description="The app's options by name (GET /app/<app>/describe); others default")
    ] = None
    walltime: Annotated[float, Meta(gt=0, description="Seconds each job may run (default: the setting)")] | None = None
    runner: (
        Annotated[str, Meta(description="Where they run: one of GET /runners (default: the app's runner)")] | None
    ) = None


class JobSubmitted(msgspec.Struct):
    job_id: str
    submit_date: str
    app: str
    job_inputs: dict[str, Any]
    data_inputs: str
    tag: str
    state: JobState
    status: str
    options: dict[str, Any]  # the app's options with the defaults filled in
    cores: int
    runner: str  # where it runs


class JobsSubmitted(msgspec.Struct):
    status: str
    jobs: list[JobSubmitted]  # in the order the files are listed: newest first


class JobStatus(msgspec.Struct):
    job_id: str
    pid: str
    state: JobState
    status: str
    exit_code: int | None
    elapsed_time: float  # seconds
    tag: str
    runner: str  # where it runs; pid is that runner's name for the run (a process id, a container)


class JobProgress(msgspec.Struct):
    job_id: str
    state: JobState
    stage: str | None  # the finder's last progress line of the step it runs now, when it prints any
    done: int | None  # how far that line counts (e.g. islands fitted) ...
    total: int | None  # ... out of how many
    elapsed_time: float  # seconds
    pixels: int | None  # of the job's image (None once the file is deleted)
    typical_seconds: float | None  # median run time of earlier successful jobs of the app here on such images
    typical_jobs: int  # how many jobs that median is of


class JobDocument(msgspec.Struct):
    job_id: str
    submit_date: str
    app: str
    job_inputs: dict[str, Any]
    data_inputs: str
    tag: str
    state: JobState
    status: str
    pid: str
    exit_code: int | None
    elapsed_time: float
    start_date: str | None
    end_date: str | None
    options: dict[str, Any]
    cores: int
    runner: str
    parent_id: str | None  # the job it is part of (a tile of a mosaic)


class JobCancelled(msgspec.Struct):
    job_id: str
    status: str
    state: JobState


class Preview(msgspec.Struct):
    status: str
    image: str  # the overlay PNG, base64


class JobFile(msgspec.Struct):
    name: str
    size_bytes: int


class CatalogColumn(msgspec.Struct):
    name: str
    unit: str | None
    ucd: str | None
    description: str | None


class Catalog(msgspec.Struct):
    """A normalized catalog: its columns with units and UCDs, and one object per source (NaN as null)."""

    name: str
    columns: list[CatalogColumn]
    sources: list[dict[str, Any]]


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


def _fields(struct: type[msgspec.Struct], document: dict[str, Any]) -> dict[str, Any]:
    return {name: document[name] for name in struct.__struct_fields__}


def submission_refused(request: Request, exc: ApplianceError) -> Response:
    return error_response(request, exc, state="ABORTED")


PRODUCT = refusals(202, 404, 416)
TABLE_MEDIA_TYPES = sorted({MEDIA_TYPES[f".{suffix}"] for suffix in TABLE_FORMATS.values()})
JOB_FILE_MEDIA_TYPES = sorted({*MEDIA_TYPES.values(), "application/octet-stream"})


class JobsController(Controller):
    path = API
    tags = ["jobs"]

    @post(
        "/job",
        status_code=202,
        opt=IDEMPOTENT,
        operation_class=IdempotentOperation,
        summary="Submit a job",
        before_request=json_object_body,
        exception_handlers={ApplianceError: submission_refused},
        responses=refusals(403, 404, 409, 413, 422, 507),
    )
    async def submit(
        self, data: JSONBody[JobRequest], appliance: NamedDependency[Appliance], user: NamedDependency[str]
    ) -> JobSubmitted:
        """``{"app": "aegean", "job_inputs": {...}, "data_inputs": "<file uuid>", "tag": "..."}``, optionally with
        ``walltime`` (seconds). Options are checked against the app's schema: every problem is listed under
        ``options`` in the 422 reply. Refusals carry ``state: "ABORTED"``, as in caesar-rest."""
        job = await anyio.to_thread.run_sync(
            lambda: appliance.jobs.submit(
                user, data.app, data.job_inputs, data.data_inputs, data.tag, data.walltime, data.runner
            )
        )
        return JobSubmitted(**_fields(JobSubmitted, job_document(job)))

    @post(
        "/jobs",
        status_code=202,
        opt=IDEMPOTENT,
        operation_class=IdempotentOperation,
        summary="Submit a job for every file with a tag",
        before_request=json_object_body,
        exception_handlers={ApplianceError: submission_refused},
        responses=refusals(403, 404, 409, 413, 422, 507),
    )
    async def submit_tagged(
        self, data: JSONBody[TaggedJobsRequest], appliance: NamedDependency[Appliance], user: NamedDependency[str]
    ) -> JobsSubmitted:
        """``{"app": "aegean", "tag": "field-a", "job_inputs": {...}}``, optionally with ``walltime`` (seconds): one
        job per file tagged ``field-a``, each tagged so too, or none at all. When the app refuses some of the files
        (no sky coordinates, no beam, options that do not suit them, bytes gone) the 422 reply ``files_refused``
        lists each under ``files`` with its reason; invalid options are refused as by POST /job."""
        jobs = await anyio.to_thread.run_sync(
            lambda: appliance.jobs.submit_tagged(user, data.app, data.job_inputs, data.tag, data.walltime, data.runner)
        )
        return JobsSubmitted(
            status=f"{len(jobs)} job(s) submitted and registered with success",
            jobs=[JobSubmitted(**_fields(JobSubmitted, job_document(job))) for job in jobs],
        )

    @get("/jobs", summary="List the caller's jobs", response_headers=LIST_HEADERS, responses=refusals())
    async def list_jobs(
        self,
        appliance: NamedDependency[Appliance],
        user: NamedDependency[str],
        job_state: Annotated[str | None, QueryParameter(name="state")] = None,
        app: FromQuery[str | None] = None,
        tag: FromQuery[str | None] = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> Response[list[JobDocument]]:
        """A bare list (as caesar-rest), newest first; filter by ``state``, ``app``, ``tag``; total in
        ``X-Total-Count``, next page in ``Link``."""
        jobs, total = await anyio.to_thread.run_sync(
            lambda: appliance.jobs.list(user, state=job_state, app=app, tag=tag, limit=limit, offset=offset)
        )
        query = {"state": job_state, "app": app, "tag": tag, "limit": limit}
        return Response(
            [JobDocument(**job_document(job)) for job in jobs],
            headers=next_page("/jobs", query, offset, len(jobs), total),
        )

    # on the event loop: the read takes ~12 us and waits for nothing but another lookup, where the hop to a worker
    # thread and back cost ~80 us, and 32 pollers kept 32 threads contending for the GIL
    @get("/job/{job_id:str}/status", summary="A job's state", sync_to_thread=False, responses=refusals(404))
    def status(
        self, appliance: NamedDependency[Appliance], user: NamedDependency[str], job_id: FromPath[str]
    ) -> JobStatus:
        return JobStatus(**appliance.jobs.status(user, job_id))

    @get("/job/{job_id:str}/progress", summary="How far a job has got", responses=refusals(404))
    async def progress(
        self, appliance: NamedDependency[Appliance], user: NamedDependency[str], job_id: FromPath[str]
    ) -> JobProgress:
        """The finder's own progress while the job runs (Aegean's and PyBDSF's island fitting, their stages) and the
        time it has run beside the typical time: the median of earlier successful jobs of its app here on images
        of 0.5 to 2 times its pixel count."""
        return JobProgress(**await anyio.to_thread.run_sync(appliance.jobs.progress, user, job_id))

    @get("/job/{job_id:str}", summary="A job, with its options and dates", responses=refusals(404))
    async def get_job(
        self, appliance: NamedDependency[Appliance], user: NamedDependency[str], job_id: FromPath[str]
    ) -> JobDocument:
        job = await anyio.to_thread.run_sync(appliance.jobs.get, user, job_id)
        return JobDocument(**job_document(job))

    @route(
        "/job/{job_id:str}/cancel",
        http_method=["GET", "POST"],
        status_code=200,
        summary="Cancel a job",
        opt=CHANGES_STATE,
        responses=refusals(403, 404),
    )
    async def cancel(
        self, appliance: NamedDependency[Appliance], user: NamedDependency[str], job_id: FromPath[str]
    ) -> JobCancelled:
        """Answers at once: a pending job is cancelled (CANCELED); a running one is CANCELING until its runner has
        stopped it (SIGTERM, SIGKILL after the grace period), then CANCELED with its tarball."""
        message = await anyio.to_thread.run_sync(appliance.jobs.cancel, user, job_id)
        job = await anyio.to_thread.run_sync(appliance.jobs.get, user, job_id)
        return JobCancelled(job_id=job_id, status=message, state=job.state)

    @delete(
        "/job/{job_id:str}",
        status_code=200,
        summary="Delete a job that has ended, with all its files",
        responses=refusals(403, 404, 409),
    )
    async def delete_job(
        self, appliance: NamedDependency[Appliance], user: NamedDependency[str], job_id: FromPath[str]
    ) -> StatusReply:
        await anyio.to_thread.run_sync(appliance.jobs.delete, user, job_id)
        return StatusReply(status=f"Job {job_id} deleted with its files")

    async def _product(
        self, request: Request, appliance: Appliance, user: str, job_id: str, name: str, filename: str | None = None
    ) -> Stream | Response:
        job, path = await anyio.to_thread.run_sync(appliance.jobs.product, user, job_id, name)
        return send(request, path, filename or f"{job.app}_{job.id[:8]}_{name}")

    @get(
        "/job/{job_id:str}/output",
        summary="The whole job folder as tar.gz",
        operation_class=file_operation("application/gzip"),
        responses=PRODUCT,
    )
    async def output(
        self, request: Request, appliance: NamedDependency[Appliance], user: NamedDependency[str], job_id: FromPath[str]
    ) -> Stream | Response:
        """For every ended job: succeeded, failed, timed out or cancelled. 202 while it has not ended."""
        return await self._product(request, appliance, user, job_id, f"job_{job_id}.tar.gz", f"job_{job_id}.tar.gz")

    @staticmethod
    async def _catalog(appliance: Appliance, user: str, job_id: str, name: str) -> Catalog:
        _, path = await anyio.to_thread.run_sync(appliance.jobs.product, user, job_id, name)
        return msgspec.json.decode(await anyio.Path(path).read_bytes(), type=Catalog)

    @get("/job/{job_id:str}/sources", summary="The island catalog as JSON", responses=refusals(202, 404))
    async def sources(
        self, appliance: NamedDependency[Appliance], user: NamedDependency[str], job_id: FromPath[str]
    ) -> Catalog:
        return await self._catalog(appliance, user, job_id, "catalog_islands.json")

    @get("/job/{job_id:str}/source-components", summary="The component catalog as JSON", responses=refusals(202, 404))
    async def source_components(
        self, appliance: NamedDependency[Appliance], user: NamedDependency[str], job_id: FromPath[str]
    ) -> Catalog:
        return await self._catalog(appliance, user, job_id, "catalog_components.json")

    @get(
        "/job/{job_id:str}/output-sources",
        summary="The island catalog as an ASCII table file",
        operation_class=file_operation("text/plain"),
        responses=PRODUCT,
    )
    async def output_sources(
        self, request: Request, appliance: NamedDependency[Appliance], user: NamedDependency[str], job_id: FromPath[str]
    ) -> Stream | Response:
        return await self._product(request, appliance, user, job_id, "catalog_islands.dat")

    @get(
        "/job/{job_id:str}/output-components",
        summary="The component catalog as an ASCII table file",
        operation_class=file_operation("text/plain"),
        responses=PRODUCT,
    )
    async def output_components(
        self, request: Request, appliance: NamedDependency[Appliance], user: NamedDependency[str], job_id: FromPath[str]
    ) -> Stream | Response:
        return await self._product(request, appliance, user, job_id, "catalog_components.dat")

    @get("/job/{job_id:str}/preview", summary="The overlay picture, base64 in JSON", responses=refusals(202, 404))
    async def preview(
        self, appliance: NamedDependency[Appliance], user: NamedDependency[str], job_id: FromPath[str]
    ) -> Preview:
        _, path = await anyio.to_thread.run_sync(appliance.jobs.product, user, job_id, "overlay.png")
        return Preview(status="", image=base64.b64encode(await anyio.Path(path).read_bytes()).decode())

    @get(
        "/job/{job_id:str}/output-plot",
        summary="The overlay picture (PNG)",
        operation_class=file_operation("image/png"),
        responses=PRODUCT,
    )
    async def output_plot(
        self, request: Request, appliance: NamedDependency[Appliance], user: NamedDependency[str], job_id: FromPath[str]
    ) -> Stream | Response:
        return await self._product(request, appliance, user, job_id, "overlay.png")

    @get(
        "/job/{job_id:str}/catalog",
        summary="A catalog in a chosen format",
        operation_class=file_operation(*TABLE_MEDIA_TYPES, json=Reference(ref="#/components/schemas/Catalog")),
        responses=PRODUCT,
    )
    async def catalog(
        self,
        request: Request,
        appliance: NamedDependency[Appliance],
        user: NamedDependency[str],
        job_id: FromPath[str],
        kind: FromQuery[Literal[KINDS]] = "components",  # type: ignore[valid-type]
        format: FromQuery[Literal[tuple(TABLE_FORMATS)]] = "votable",  # type: ignore[valid-type]
    ) -> Stream | Response:
        """``kind``: islands or components; ``format``: votable, fits, csv, json or ascii."""
        return await self._product(request, appliance, user, job_id, f"catalog_{kind}.{TABLE_FORMATS[format]}")

    @get(
        "/job/{job_id:str}/regions",
        summary="Region file of the components",
        operation_class=file_operation("text/plain"),
        responses=PRODUCT,
    )
    async def regions(
        self,
        request: Request,
        appliance: NamedDependency[Appliance],
        user: NamedDependency[str],
        job_id: FromPath[str],
        format: FromQuery[Literal[tuple(REGION_FORMATS)]] = "ds9",  # type: ignore[valid-type]
    ) -> Stream | Response:
        """Each component's FWHM ellipse in sky coordinates (ICRS), labelled with its id. ``format``: ds9 or crtf
        (CASA)."""
        return await self._product(request, appliance, user, job_id, f"regions.{REGION_FORMATS[format]}")

    @get("/job/{job_id:str}/files", summary="The files in the job's folder", responses=refusals(404))
    async def files(
        self, appliance: NamedDependency[Appliance], user: NamedDependency[str], job_id: FromPath[str]
    ) -> list[JobFile]:
        _, paths = await anyio.to_thread.run_sync(appliance.jobs.files_of, user, job_id)
        return [JobFile(name=p.name, size_bytes=p.stat().st_size) for p in paths]

    @get(
        "/job/{job_id:str}/files/{name:str}",
        summary="One file of the job's folder",
        operation_class=file_operation(*JOB_FILE_MEDIA_TYPES),
        responses=refusals(404, 416),
    )
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

    @get(
        "/job/{job_id:str}/log",
        summary="The job's log",
        media_type=MediaType.TEXT,
        response_headers=[
            ResponseHeader(
                name="X-Log-Size", value="", documentation_only=True, description="The offset to ask from next time"
            )
        ],
        responses=refusals(404),
    )
    async def job_log(
        self,
        appliance: NamedDependency[Appliance],
        user: NamedDependency[str],
        job_id: FromPath[str],
        offset: Offset = 0,
    ) -> Response[str]:
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
