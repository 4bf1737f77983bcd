"""Jobs: submission, execution in the queue, cancel, listing and deletion, products for every terminal state, and
recovery after a crash or a shutdown.

A job's folder <home>/jobs/<user>/job_<id>/ holds job.json (what was asked), job.log (what the appliance did and
everything the finder printed), the finder's own files, the normalized products and, once the job has ended in any
state, job_<id>.tar.gz of all of it.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
import tarfile
import threading
import uuid as uuidlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from astropy.io import fits
from astropy.table import Table
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from appliance.apps import App, AppRegistry, Child, JobInput
from appliance.catalogs import check_footprint, flux_plots, write_products
from appliance.config import Settings
from appliance.db import Database, Lookup
from appliance.engine import INPUT_IMAGE, MAX_ATTEMPTS, Engine, Runners, Target
from appliance.errors import (
    ApplianceError,
    Conflict,
    FilesRefused,
    InsufficientStorage,
    InvalidRequest,
    NotFound,
    NotReady,
    Unavailable,
)
from appliance.events import ChangeFeed
from appliance.models import LIVE_JOB_STATES, TERMINAL_JOB_STATES, Job, StoredFile
from appliance.progress import EARLIER_JOBS, finder_progress, pixel_count, typical
from appliance.residual import RESIDUAL, write_residual
from appliance.storage import FileStore, clean_tag
from runners import Availability

log = logging.getLogger(__name__)

JOB_LOG = "job.log"
JOB_SPEC = "job.json"
_JOB_ID_LENGTH = 36
MAX_TAGGED_JOBS = 1000  # jobs one request may submit (one per file of a tag)
_PLOTTING = threading.Lock()  # two <img> of one page ask for the two plots of one job at the same time
# What a status poll reads: the columns of its answer, by primary key, with no ORM object (building one cost a poll
# most of its time)
_STATUS = Lookup(
    select(
        Job.id,
        Job.user,
        Job.pid,
        Job.state,
        Job.status,
        Job.exit_code,
        Job.start_date,
        Job.end_date,
        Job.tag,
        Job.runner,
    ).where(Job.id == bindparam("job_id"))
)


def now() -> datetime:
    return datetime.now(UTC)


class JobService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        files: FileStore,
        apps: AppRegistry,
        runners: Runners,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self.apps = apps
        self.db = db
        self.files = files
        self.changes = ChangeFeed()
        self.engine = Engine(self, runners, clock) if clock else Engine(self, runners)

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """A transaction that changes what users see: live pages hear of it once it is committed."""
        with self.db.session() as session:
            yield session
        self.changes.publish()

    # -- submission and queries ------------------------------------------------------------------------------

    def submit(
        self,
        user: str,
        app_name: Any,
        job_inputs: Any,
        data_inputs: Any,
        tag: Any = None,
        walltime: Any = None,
        runner: Any = None,
    ) -> Job:
        """Validate everything, record the job PENDING with its folder, and wake the engine."""
        if not isinstance(data_inputs, str) or not data_inputs:
            raise InvalidRequest("missing_data_inputs", "give the uuid of an uploaded file in 'data_inputs'")
        app, options, walltime, runner = self._checked(app_name, job_inputs, tag, walltime, runner)
        record = self.files.get(user, data_inputs)
        app.check_input(record.summary, options, self.engine.target(app, runner))
        return self._record(user, app, job_inputs, options, [record], tag, walltime, runner)[0]

    def submit_tagged(
        self, user: str, app_name: Any, job_inputs: Any, tag: Any, walltime: Any = None, runner: Any = None
    ) -> list[Job]:
        """One job per file with the tag ``tag`` (the jobs get the tag too), all or none: when the app refuses any
        of the files nothing is recorded, and FilesRefused names each refused file and why."""
        tag = clean_tag(tag) if isinstance(tag, str) else None
        if tag is None:
            raise InvalidRequest("missing_tag", "give the tag of the files to run the app on in 'tag'")
        app, options, walltime, runner = self._checked(app_name, job_inputs, tag, walltime, runner)
        records, total = self.files.list(user, tag=tag, limit=MAX_TAGGED_JOBS)
        if not total:
            raise NotFound("no_tagged_files", f"no file is tagged {tag!r}")
        if total > MAX_TAGGED_JOBS:
            raise InvalidRequest(
                "too_many_files", f"{total} files are tagged {tag!r}: at most {MAX_TAGGED_JOBS} at once"
            )
        refused = []
        for record in records:
            try:
                self.files.open_path(user, record.uuid)
                app.check_input(record.summary, options, self.engine.target(app, runner))
            except ApplianceError as exc:
                refused.append({"uuid": record.uuid, "filename_orig": record.filename_orig, "error": exc.code,
                                "status": exc.message, **exc.details})  # fmt: skip
        if refused:
            raise FilesRefused(refused)
        return self._record(user, app, job_inputs, options, records, tag, walltime, runner)

    def _checked(
        self, app_name: Any, job_inputs: Any, tag: Any, walltime: Any, runner: Any
    ) -> tuple[App, dict[str, Any], float, str]:
        """The app, the validated options, the wall time and the runner of a submission, whatever its files."""
        if not isinstance(app_name, str) or not app_name:
            raise InvalidRequest("missing_app", "give the app to run in 'app' (see GET /apps)")
        if tag is not None and not isinstance(tag, str):
            raise InvalidRequest("invalid_tag", "tag must be a string")
        clean_tag(tag)
        if app_name not in self.apps:
            raise InvalidRequest("unknown_app", f"Unknown app {app_name}! Known apps: {', '.join(self.apps.apps)}")
        app = self.apps.get(app_name)
        runner = self._runner(app, runner)
        available = self.engine.app_availability(app, runner)
        if not available.available:
            raise Unavailable("app_unavailable", f"{app_name} cannot run on the {runner} runner: {available.reason}")
        return app, app.schema.validate(job_inputs), self._walltime(walltime), runner

    def default_runner(self, app: App) -> str:
        return app.runner or self.settings.runner

    def app_availability(self, app: App, runner: str | None = None) -> Availability:
        """Whether ``app`` can run on ``runner`` (default: its own), and why not."""
        return self.engine.app_availability(app, runner or self.default_runner(app))

    def app_runners(self, app: App) -> dict[str, Availability]:
        """Whether ``app`` can run on each runner."""
        return {name: self.engine.app_availability(app, name) for name in self.engine.runners.names}

    def _runner(self, app: App, name: Any) -> str:
        """The runner a job asked for, else its app's default; refused when unknown or unavailable."""
        if name is None:
            name = self.default_runner(app)
        runners = self.engine.runners
        if not isinstance(name, str) or name not in runners:
            raise Unavailable("unknown_runner", f"no runner named {name!r}; known runners: {', '.join(runners.names)}")
        found = runners.availability(name, fresh=True)
        if not found.available:
            raise Unavailable("runner_unavailable", f"the {name} runner is unavailable: {found.reason}")
        return name

    def _record(self, user: str, app: App, job_inputs: Any, options: dict[str, Any], records: list[StoredFile],
                tag: str | None, walltime: float, runner: str, parent_id: str | None = None) -> list[Job]:  # fmt: skip
        """Record the jobs PENDING with their folders in one transaction, then queue them: all of them or none."""
        jobs = [
            Job(
                id=str(uuidlib.uuid4()),
                user=user,
                app=app.name,
                data_inputs=record.uuid,
                file_uuid=record.uuid,
                job_inputs=job_inputs or {},
                options=options,
                tag=clean_tag(tag),
                state="PENDING",
                status="Job submitted and registered with success",
                submit_date=now(),
                cores=min(app.cores(options), self._capacity(runner)),
                walltime=walltime,
                attempts=0,
                runner=runner,
                pid="",
                stage="queued",
                parent_id=parent_id,
            )
            for record in records
        ]
        self.files.check_free_space("the job's outputs")
        folders = [self.folder(job) for job in jobs]
        try:
            for job, folder, record in zip(jobs, folders, records, strict=True):
                folder.mkdir(parents=True)
                self._write_spec(job, record.filename_orig, record.summary)
                if app.cores(options) > job.cores:
                    self.log_line(
                        job, f"{app.cores(options)} cores asked for, {job.cores} available: running on {job.cores}"
                    )
            with self.writing() as session:
                session.add_all(jobs)
                try:
                    session.flush()
                except IntegrityError:  # a file was deleted meanwhile
                    raise Conflict("file_deleted", "a file was deleted while the jobs were submitted: nothing was "
                                   "submitted") from None  # fmt: skip
        except BaseException as exc:
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientStorage(
                    "insufficient_storage", "the disk is full: the job was not recorded"
                ) from None
            raise
        for job in jobs:
            log.info("job submitted", extra={"action": "submitjob", "user": user, "job": job.id, "app": app.name,
                                             "runner": runner})  # fmt: skip
        self.engine.wake()
        return jobs

    def _capacity(self, runner: str) -> int:
        """The most cores one job may hold on ``runner``: all of its capacity, or all of this machine's cores when the
        runner's backend queues by itself."""
        return self.engine.runners.get(runner).capacity() or self.settings.cores

    def submit_children(self, parent: Job, children: list[Child]) -> list[Job]:
        """Record the child jobs of ``parent`` PENDING on its runner, each checked as a submission of its own, all or
        none; they run with its wall time and tag."""
        made = []
        for child in children:
            app, options, _, runner = self._checked(child.app, child.job_inputs, parent.tag, parent.walltime,
                                                    parent.runner)  # fmt: skip
            record = self.files.get(parent.user, child.data_inputs)
            app.check_input(record.summary, options, self.engine.target(app, runner))
            made.append((app, child.job_inputs, options, record))
        jobs = []
        for app, job_inputs, options, record in made:
            jobs += self._record(parent.user, app, job_inputs, options, [record], parent.tag, parent.walltime,
                                 parent.runner, parent_id=parent.id)  # fmt: skip
        return jobs

    def _walltime(self, walltime: Any) -> float:
        limit = self.settings.job_walltime_seconds
        if walltime is None:
            return limit
        if isinstance(walltime, bool) or not isinstance(walltime, (int, float)) or not 0 < walltime <= limit:
            raise InvalidRequest("invalid_walltime", f"walltime must be a number of seconds in (0, {limit:g}]")
        return float(walltime)

    def get(self, user: str, job_id: str) -> Job:
        with self.db.session() as session:
            job = session.get(Job, job_id) if isinstance(job_id, str) and len(job_id) <= _JOB_ID_LENGTH else None
            if job is None or job.user != user:
                raise NotFound("job_not_found", f"Job {job_id} not found for user {user}!")
            return job

    def status(self, user: str, job_id: str) -> dict[str, Any]:
        """caesar-rest's status of a job: its state, the finder's pid and exit code, the time it has run. One read
        by primary key that waits for nothing: cheap enough for the event loop."""
        row = None
        if isinstance(job_id, str) and len(job_id) <= _JOB_ID_LENGTH:
            row = self.db.lookup(_STATUS, job_id=job_id)
        if row is None or row["user"] != user:
            raise NotFound("job_not_found", f"Job {job_id} not found for user {user}!")
        return {
            "job_id": row["id"],
            "pid": row["pid"],
            "state": row["state"],
            "status": row["status"],
            "exit_code": row["exit_code"],
            "elapsed_time": elapsed_time(row["state"], row["start_date"], row["end_date"]),
            "tag": row["tag"] or "",
            "runner": row["runner"],
        }

    def list(
        self,
        user: str,
        state: str | None = None,
        app: str | None = None,
        tag: str | None = None,
        limit: int = 100,
        offset: int = 0,
        file_uuid: str | None = None,
    ) -> tuple[list[Job], int]:
        """A page of the user's jobs, newest first, and the total count."""
        where = [Job.user == user]
        if file_uuid is not None:
            where.append(Job.file_uuid == file_uuid)
        if state is not None:
            where.append(Job.state == state.upper())
        if app is not None:
            where.append(Job.app == app)
        if tag is not None:
            where.append(Job.tag == tag)
        with self.db.session() as session:
            total = session.scalar(select(func.count()).select_from(Job).where(*where)) or 0
            jobs = session.scalars(
                select(Job).where(*where).order_by(Job.submit_date.desc(), Job.id).limit(limit).offset(offset)
            ).all()
            return list(jobs), total

    def counts(self, user: str) -> dict[str, int]:
        """How many of the user's jobs are in each state."""
        with self.db.session() as session:
            rows = session.execute(select(Job.state, func.count()).where(Job.user == user).group_by(Job.state)).all()
        return {state: count for state, count in rows}

    def last_ended(self, user: str) -> Job | None:
        """The user's job that ended most recently."""
        with self.db.session() as session:
            return session.scalars(
                select(Job).where(Job.user == user, Job.end_date.is_not(None)).order_by(Job.end_date.desc()).limit(1)
            ).first()

    def progress(self, user: str, job_id: str) -> dict[str, Any]:
        """How far a job has got: the finder's last progress line of the step it runs now (when the finder prints
        any), the time it has run, and the median time earlier successful jobs of its app took here on images of
        about its size."""
        job = self.get(user, job_id)
        app = self.apps.apps.get(job.app)
        finder = None
        if job.state == "RUNNING" and app is not None:
            finder = finder_progress(self.folder(job) / JOB_LOG, app.progress_lines)
        try:
            pixels = pixel_count(self.files.get(user, job.data_inputs).summary)
        except NotFound:
            pixels = None
        with self.db.session() as session:
            earlier = session.execute(
                select(Job.start_date, Job.end_date, StoredFile.summary)
                .join(StoredFile, Job.file_uuid == StoredFile.uuid)
                .where(Job.app == job.app, Job.state == "SUCCESS", Job.id != job.id, Job.start_date.is_not(None))
                .order_by(Job.end_date.desc())
                .limit(EARLIER_JOBS)
            ).all()
        usual = typical(pixels, [((end - start).total_seconds(), summary) for start, end, summary in earlier])
        return {
            "job_id": job.id,
            "state": job.state,
            "stage": finder.stage if finder else None,
            "done": finder.done if finder else None,
            "total": finder.total if finder else None,
            "elapsed_time": elapsed_time(job.state, job.start_date, job.end_date),
            "pixels": pixels,
            "typical_seconds": usual.seconds if usual else None,
            "typical_jobs": usual.jobs if usual else 0,
        }

    def folder(self, job: Job) -> Path:
        return self.settings.jobs_dir / job.user / f"job_{job.id}"

    def tarball(self, job: Job) -> Path:
        return self.folder(job) / f"job_{job.id}.tar.gz"

    def file(self, user: str, job_id: str, name: str) -> tuple[Job, Path]:
        """A file of the job's folder by its plain name (never a path)."""
        job = self.get(user, job_id)
        path = self.folder(job) / name
        if "/" in name or "\\" in name or name.startswith(".") or not path.is_file():
            raise NotFound("file_not_found", f"job {job_id} has no file {name!r}")
        return job, path

    def layers(self, user: str, job_id: str) -> dict[str, Path]:
        """The maps of a finished job the viewer can show over its image, on the image's grid: the residual image
        and the finder's own maps (background, rms, ...) it kept."""
        job = self.get(user, job_id)
        if job.state != "SUCCESS":
            return {}
        app = self.apps.get(job.app)
        names = {"residual": RESIDUAL} if app.fits_gaussians else {}
        found = {layer: self.folder(job) / name for layer, name in {**names, **app.maps}.items()}
        return {layer: path for layer, path in found.items() if path.is_file()}

    def product(self, user: str, job_id: str, name: str) -> tuple[Job, Path]:
        """An output of a job that has ended; NotReady while it has not."""
        job = self.get(user, job_id)
        if job.state not in TERMINAL_JOB_STATES or job.state == "ABORTED":
            raise NotReady(
                "job_not_completed",
                f"Job {job_id} not yet completed (state={job.state}), output not available",
                job_id=job_id,
            )
        path = self.folder(job) / name
        if not path.is_file():
            raise NotFound(
                "output_not_available", f"Job {job_id} ended {job.state} without {name}: {job.status} (see its log)"
            )
        return job, path

    def flux_plot(self, user: str, job_id: str, name: str) -> Path:
        """The flux histogram or the source counts of a successful job, drawn once and cached."""
        job, catalog = self.product(user, job_id, "catalog_components.fits")
        cache = self.settings.cache_dir / "plots" / job.id
        path = cache / name
        with _PLOTTING:
            if not path.exists():
                cache.mkdir(parents=True, exist_ok=True)
                parts = [cache / ".flux-histogram.part.png", cache / ".source-counts.part.png"]
                flux_plots(Table.read(catalog), *parts, f"{job.app} {job.id[:8]}")
                for part in parts:
                    part.replace(cache / part.name.replace(".part", "").lstrip("."))
        return path

    def files_of(self, user: str, job_id: str) -> tuple[Job, list[Path]]:
        job = self.get(user, job_id)
        folder = self.folder(job)
        paths = (
            sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")) if folder.is_dir() else []
        )
        return job, paths

    # -- cancel and delete ----------------------------------------------------------------------------------

    def cancel(self, user: str, job_id: str) -> str:
        """Cancel a pending job at once; ask the engine to stop a running one (it is CANCELING until stopped).
        Returns at once with the status message."""
        return self.engine.cancel(user, job_id)

    def delete(self, user: str, job_id: str) -> None:
        """Remove a finished job: its folder is renamed aside, the row deleted, then the folder removed; a crash in
        between leaves a folder that ``recover`` removes, never a row without its folder."""
        job = self.get(user, job_id)
        if job.state in LIVE_JOB_STATES:
            raise Conflict("job_running", f"Job {job_id} is {job.state}: cancel it before deleting it")
        with self.db.session() as session:
            children = session.scalars(select(Job.id).where(Job.parent_id == job.id)).all()
        for child in children:  # a parent's children are ended once it has ended
            self.delete(user, child)
        folder = self.folder(job)
        trash = folder.with_name(f".trash-{job.id}")
        if folder.exists():
            folder.rename(trash)
        try:
            with self.writing() as session:
                session.execute(Job.__table__.delete().where(Job.id == job.id))
        except BaseException:
            if trash.exists():
                trash.rename(folder)
            raise
        shutil.rmtree(trash, ignore_errors=True)
        shutil.rmtree(self.settings.cache_dir / "plots" / job.id, ignore_errors=True)
        for copy in (self.settings.cache_dir / "view").glob(f"job-{job.id}-*"):
            copy.unlink(missing_ok=True)  # the viewer's copies of its maps
        log.info("job deleted", extra={"action": "deletejob", "user": user, "job": job_id})

    # -- what the engine asks: a job's input, its products, its end -----------------------------------------

    def job_input(self, job: Job, app: App, summary: dict[str, Any], target: Target) -> JobInput:
        folder = self.folder(job)
        return JobInput(image=folder / INPUT_IMAGE, summary=summary, options=job.options, workdir=folder,
                        log=folder / JOB_LOG, cores=job.cores, target=target)  # fmt: skip

    def collect(self, job: Job) -> None:
        """The finder's files of a job whose steps succeeded become its products; then it ends SUCCESS."""
        app = self.apps.get(job.app)
        try:
            summary = self.files.get(job.user, job.data_inputs).summary
        except NotFound:
            summary = json.loads((self.folder(job) / JOB_SPEC).read_text()).get("input_summary", {})
        job_input = self.job_input(job, app, summary, self.engine.target(app, job.runner))
        try:
            catalog = app.collect(job_input)
            with fits.open(job_input.image, memmap=True) as image:
                catalog, footprint = check_footprint(catalog, image[0].data, job.options.get("drop_outside", True))
            if footprint:
                self.log_line(job, footprint)
            write_products(catalog, job_input.workdir, job_input.image, f"{job.app} {job.id[:8]}")
            if app.fits_gaussians:
                write_residual(job_input.image, catalog.components, job_input.workdir / RESIDUAL)
        except Exception as exc:  # the finder's files could not be read: the run failed, not the appliance
            log.exception("collecting products failed", extra={"job": job.id})
            self.log_line(job, f"reading the finder's outputs failed: {exc!r}")
            self.end(job, "FAILURE", f"the finder's outputs could not be read: {exc}", 0)
            return
        self.log_line(job, f"catalogs: {len(catalog.islands)} islands, {len(catalog.components)} components")
        self.end(
            job, "SUCCESS", f"Job completed: {len(catalog.islands)} islands, {len(catalog.components)} components", 0
        )

    def interrupted(self, job: Job, why: str) -> None:
        """The job could not finish because the appliance stopped: run it again, unless that already happened."""
        if job.attempts >= MAX_ATTEMPTS:
            self.end(job, "FAILURE", f"interrupted twice ({why}); submit it again", None)
            return
        with self.writing() as session:
            session.execute(
                update(Job)
                .where(Job.id == job.id)
                .values(
                    state="PENDING",
                    stage="queued",
                    handle=None,
                    pid="",
                    stop_reason=None,
                    cancel_requested_at=None,
                    deadline=None,
                    status=f"re-queued: {why} (attempt {job.attempts} of {MAX_ATTEMPTS} interrupted)",
                )
            )
        self.log_line(job, f"interrupted: {why}; it will run again")

    def end(self, job: Job, state: str, status: str, exit_code: int | None) -> None:
        """Write the log line, job.json and the tarball, and only then record the final state: a client that sees a
        job ended finds all its outputs."""
        final = self.final(state, status, exit_code)
        self.log_line(job, f"{state}: {status}")
        self.package(job.id, final)
        self.finish_if_state(job.id, LIVE_JOB_STATES, final)
        log.info("job ended", extra={"action": "jobend", "user": job.user, "job": job.id, "state": state})

    @staticmethod
    def final(state: str, status: str, exit_code: int | None) -> dict[str, Any]:
        return {"state": state, "status": status, "exit_code": exit_code, "end_date": now(), "handle": None,
                "stage": "ended"}  # fmt: skip

    def finish_if_state(self, job_id: str, states: tuple[str, ...], final: dict[str, Any]) -> bool:
        with self.writing() as session:
            return bool(
                session.execute(update(Job).where(Job.id == job_id, Job.state.in_(states)).values(**final)).rowcount
            )

    def package(self, job_id: str, final: dict[str, Any]) -> None:
        """job.json with the final state, then the tarball of the folder (the prepared input copy left out)."""
        with self.db.session() as session:
            job = session.get(Job, job_id)
        if job is None:
            return
        for key, value in final.items():
            setattr(job, key, value)
        folder = self.folder(job)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / INPUT_IMAGE).unlink(missing_ok=True)
        self._write_spec(job)
        tarball = self.tarball(job)
        partial = tarball.with_name(f".{tarball.name}.part")
        with tarfile.open(partial, "w:gz", compresslevel=1) as tar:  # level 9 triples the time for 10 % less
            for path in sorted(folder.iterdir()):
                if path.is_file() and not path.name.startswith(".") and path != tarball:
                    tar.add(path, arcname=f"job_{job.id}/{path.name}")
        partial.replace(tarball)

    def _write_spec(self, job: Job, filename_orig: str | None = None, summary: dict | None = None) -> None:
        path = self.folder(job) / JOB_SPEC
        previous = json.loads(path.read_text()) if path.exists() else {}
        spec = {
            **previous,
            **job_document(job),
            "options": job.options,
            "cores": job.cores,
            "walltime": job.walltime,
            "runner": job.runner,
        }
        if filename_orig is not None:
            spec["filename_orig"] = filename_orig
        if summary is not None:
            spec["input_summary"] = summary
        path.write_text(json.dumps(spec, indent=2, default=str))

    def record_step(self, job: Job, step: dict[str, Any]) -> None:
        """job.json lists each step run by this attempt: what, exit code, seconds."""
        path = self.folder(job) / JOB_SPEC
        spec = json.loads(path.read_text()) if path.exists() else job_document(job)
        spec["steps"] = [*spec.get("steps", []), {"attempt": job.attempts, **step}]
        path.write_text(json.dumps(spec, indent=2, default=str))

    def log_line(self, job: Job, message: str) -> None:
        folder = self.folder(job)
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / JOB_LOG).open("a") as f:
            f.write(f"[{now().isoformat(timespec='seconds')}] appliance: {message}\n")

    def _state(self, job_id: str) -> str | None:
        with self.db.session() as session:
            return session.scalar(select(Job.state).where(Job.id == job_id))

    # -- lifecycle -------------------------------------------------------------------------------------------

    def recover(self) -> dict[str, int]:
        """At start, before the engine runs: follow again what durable runners still run, stop the rest and run it
        again (once), and remove half-deleted job folders."""
        counts = self.engine.recover()
        counts["folders_removed"] = self._remove_stray_folders()
        if any(counts.values()):
            log.warning("recovered jobs after an interrupted run", extra={"action": "recover", **counts})
        return counts

    def _remove_stray_folders(self) -> int:
        with self.db.session() as session:
            known = {f"job_{job_id}" for job_id in session.scalars(select(Job.id)).all()}
        removed = 0
        for folder in self.settings.jobs_dir.glob("*/*"):
            if folder.is_dir() and (
                folder.name.startswith(".trash-") or (folder.name.startswith("job_") and folder.name not in known)
            ):
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed

    def start(self, monitor: bool = True) -> None:
        self.settings.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.engine.start(monitor)

    @property
    def stopping(self) -> bool:
        return self.engine.stopping

    def stop(self) -> None:
        """Stop the engine (local runs are stopped and run again at the next start, durable ones go on); end live
        streams."""
        self.engine.stop()
        self.changes.close()


def job_document(job: Job) -> dict[str, Any]:
    """A job as /jobs lists it: caesar-rest's fields, plus options, cores and dates."""
    return {
        "job_id": job.id,
        "submit_date": job.submit_date.isoformat(),
        "app": job.app,
        "job_inputs": job.job_inputs,
        "data_inputs": job.data_inputs,
        "tag": job.tag or "",
        "state": job.state,
        "status": job.status,
        "pid": job.pid,
        "exit_code": job.exit_code,
        "elapsed_time": elapsed_time(job.state, job.start_date, job.end_date),
        "start_date": job.start_date.isoformat() if job.start_date else None,
        "end_date": job.end_date.isoformat() if job.end_date else None,
        "options": job.options,
        "cores": job.cores,
        "runner": job.runner,
        "parent_id": job.parent_id,
    }


def elapsed_time(state: str, start_date: datetime | None, end_date: datetime | None) -> float:
    """Seconds a job has run: until its end, or until now while it runs."""
    if start_date is None:
        return 0.0
    end = end_date or (now() if state in LIVE_JOB_STATES else start_date)
    return round((end - start_date).total_seconds(), 3)


def _not_started(*_: Any) -> Any:
    raise RuntimeError("the job queue is not running")
