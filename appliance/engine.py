"""The job engine: a job is a state machine kept in the database, moved by short steps; nothing waits on a run.

- Admission: PENDING jobs are claimed first come first served per runner, while the runner has cores for them;
  each claimed job gets a queue task that prepares its input image, records its steps and starts the first.
- The monitor: one tick asks each runner for the status of all of its active runs in one call, copies what they
  printed to the job logs, starts the next step, sends SIGTERM (then SIGKILL after the grace period) to runs that
  were cancelled or passed their deadline, hands finished jobs to a queue task that writes their catalogs, and
  moves parents whose children have all ended.
- Restart: runs of durable runners (a container, a Slurm job) are followed again; the others are stopped and
  their jobs run again, once.

Tests step it with ``tick()`` in their own thread on a fake runner and a fake clock (``monitor=False``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, select, update

from appliance.errors import ApplianceError, InvalidRequest, NotFound
from appliance.fitsimage import prepare_image
from appliance.models import ACTIVE_STEP_STATES, LIVE_JOB_STATES, TERMINAL_JOB_STATES, Job, Step
from runners import (
    OUT_OF_MEMORY,
    TIMED_OUT,
    Availability,
    Handle,
    Runner,
    RunSpec,
    RunStatus,
    load_runner,
    runner_names,
)

if TYPE_CHECKING:
    from appliance.apps import App, Child
    from appliance.config import Settings
    from appliance.jobs import JobService

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2
INPUT_IMAGE = "input.fits"
LOG_COPY_SECONDS = 1.0  # a running step's output reaches the job log at least this often
AVAILABILITY_SECONDS = 5.0  # how long a runner's answer to "are you there?" is trusted
SHUTDOWN_GRACE = 2.0  # seconds a local run gets between SIGTERM and SIGKILL when the appliance stops
RUNNING_STATES = ("STARTED", "RUNNING", "CANCELING")


def as_datetime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class Runners:
    """Every runner of the entry-point group, made once with its ``[runners.<name>]`` settings; a runner that cannot
    be made is listed unavailable with the reason. Tests hand in runner objects instead."""

    def __init__(self, settings: Settings, given: dict[str, Runner] | None = None) -> None:
        self.settings = settings
        self._runners: dict[str, Runner] = dict(given or {})
        self._broken: dict[str, str] = {}
        self._available: dict[str, tuple[float, Availability]] = {}
        self._lock = threading.Lock()
        if given is None:
            for name in runner_names():
                self._make(name)

    def _make(self, name: str) -> None:
        options = dict(self.settings.runners.get(name, {}))
        if name == "local":
            options.setdefault("cores", self.settings.job_cores)
        if name == "slurm":  # the folder its probe job writes into, to check that the cluster sees it
            options.setdefault("jobs_dir", str(self.settings.jobs_dir))
        try:
            self._runners[name] = load_runner(name, **options)
        except Exception as exc:  # a plugin's settings or imports: the runner is unavailable, the appliance runs
            log.warning("runner cannot be made", extra={"runner": name, "error": str(exc)})
            self._broken[name] = f"it could not be set up: {exc}"

    @property
    def names(self) -> list[str]:
        return sorted({*self._runners, *self._broken})

    def __contains__(self, name: object) -> bool:
        return name in self._runners or name in self._broken

    def get(self, name: str) -> Runner:
        if name not in self._runners:
            raise NotFound("unknown_runner", f"no runner named {name!r} (known: {', '.join(self.names)})")
        return self._runners[name]

    def availability(self, name: str, fresh: bool = False) -> Availability:
        if name in self._broken:
            return Availability(False, self._broken[name])
        now = time.monotonic()
        with self._lock:
            cached = self._available.get(name)
        if cached and not fresh and now - cached[0] < AVAILABILITY_SECONDS:
            return cached[1]
        try:
            answer = self.get(name).availability()
        except Exception as exc:  # noqa: BLE001 (any failure to answer is the answer)
            answer = Availability(False, f"it did not answer: {exc}")
        with self._lock:
            self._available[name] = (now, answer)
        return answer


@dataclass(frozen=True)
class Target:
    """Where a job's steps run, as an app needs to know it to build them."""

    runner: str
    containers: bool
    image: str | None = None  # the app's image, for runners that run steps in one


class Engine:
    def __init__(
        self,
        service: JobService,
        runners: Runners,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.settings = service.settings
        self.db = service.db
        self.runners = runners
        self.clock = clock
        self.enqueue: Callable[[str, str], None] = _not_started
        self.paused: Callable[[], bool] = lambda: False
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None
        self._started = False
        self._log_copied: dict[int, float] = {}
        self._asked: dict[str, float] = {}
        self._notes: dict[int, str | None] = {}  # what each active step's status last said, to notice a change
        self._silent: dict[str, float] = {}  # runners whose backend does not answer, since when
        self._app_available: dict[tuple[str, str], tuple[float, Availability]] = {}
        self.ticks = 0

    # -- what the services ask -------------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def target(self, app: App, runner_name: str) -> Target:
        runner = self.runners.get(runner_name)
        containers = runner.capabilities.containers
        return Target(runner_name, containers, app.image if containers else None)

    def app_availability(self, app: App, runner_name: str) -> Availability:
        """Whether ``app`` can run on that runner: the runner is there, and the app's finder is installed here or its
        image is present in the runner's engine (asked again after a few seconds)."""
        key = (app.name, runner_name)
        cached = self._app_available.get(key)
        if cached and time.monotonic() - cached[0] < AVAILABILITY_SECONDS:
            return cached[1]
        answer = self._app_availability(app, runner_name)
        self._app_available[key] = (time.monotonic(), answer)
        return answer

    def _app_availability(self, app: App, runner_name: str) -> Availability:
        if runner_name not in self.runners:
            return Availability(False, f"no runner named {runner_name!r}")
        found = self.runners.availability(runner_name)
        if not found.available:
            return Availability(False, f"the {runner_name} runner is unavailable: {found.reason}")
        runner = self.runners.get(runner_name)
        if not runner.capabilities.containers:
            return app.availability()
        if not app.image:
            return Availability(False, f"{app.name} has no container image (set [apps.{app.name}] image)")
        readable = app.container_availability()
        if not readable.available:
            return readable
        check = getattr(runner, "image_availability", None)
        return check(app.image) if check else Availability(True)

    def overview(self) -> list[dict[str, Any]]:
        """Every runner: whether it can run steps and why not, what it can do, and its load now."""
        used = self.cores_in_use()
        with self.db.session() as session:
            rows = session.execute(
                select(Step.runner, Step.state, func.count())
                .where(Step.state.in_(ACTIVE_STEP_STATES))
                .group_by(Step.runner, Step.state)
            ).all()
            pending = dict(
                session.execute(
                    select(Job.runner, func.count()).where(Job.state == "PENDING").group_by(Job.runner)
                ).all()
            )
        steps = {(runner, state): count for runner, state, count in rows}
        listed = []
        for name in self.runners.names:
            found = self.runners.availability(name)
            runner = self.runners._runners.get(name)
            listed.append({
                "name": name,
                "available": found.available,
                "reason": found.reason,
                "capabilities": runner.capabilities.to_json() if runner else {},
                "capacity_cores": runner.capacity() if runner else None,
                "cores_busy": used.get(name, 0),
                "runs_running": steps.get((name, "running"), 0),
                "runs_queued": steps.get((name, "queued"), 0),
                "jobs_pending": pending.get(name, 0),
                "default": name == self.settings.runner,
            })  # fmt: skip
        return listed

    def cores_in_use(self) -> dict[str, int]:
        with self.db.session() as session:
            rows = session.execute(
                select(Job.runner, func.sum(Job.cores)).where(Job.state.in_(RUNNING_STATES)).group_by(Job.runner)
            ).all()
        return {runner: int(cores or 0) for runner, cores in rows}

    def cancel(self, user: str, job_id: str) -> str:
        """Record the request and return at once: a pending job ends CANCELED now, a running one is stopped by the
        monitor (its state CANCELING until then); its children are cancelled with it."""
        job = self.service.get(user, job_id)
        if job.state in TERMINAL_JOB_STATES:
            return f"Job {job_id} already completed (state={job.state}), nothing to be canceled"
        with self.db.session() as session:
            children = session.scalars(select(Job).where(Job.parent_id == job.id, Job.state.in_(LIVE_JOB_STATES)))
            for child in children.all():
                self._request_cancel(child)
        message = self._request_cancel(job)
        self.service.changes.publish()
        self.wake()
        return message

    def _request_cancel(self, job: Job) -> str:
        if job.state == "PENDING":
            final = self.service.final("CANCELED", "Job canceled by user", -1)
            self.service.log_line(job, "CANCELED: Job canceled by user")
            self.service.package(job.id, final)
            if self.service.finish_if_state(job.id, ("PENDING",), final):
                return "Job canceled and status updated in DB"
        moment = as_datetime(self.clock())
        with self.db.session() as session:
            session.execute(
                update(Job)
                .where(Job.id == job.id, Job.state.in_(("STARTED", "RUNNING")))
                .values(state="CANCELING", cancel_requested_at=moment, status="cancel requested by user")
            )
        return "Job cancel requested; its processes are being stopped"

    # -- the monitor -----------------------------------------------------------------------------------------

    def start(self, monitor: bool = True) -> None:
        self._stopping.clear()
        self._started = True
        if monitor:
            self._monitor = threading.Thread(target=self._watch, name="job-monitor", daemon=True)
            self._monitor.start()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _watch(self) -> None:
        interval = self.settings.queue_poll_seconds
        while not self._stopping.is_set():
            try:
                self.tick()
            except Exception:  # a bug must not stop every job: it is logged, and the next tick tries again
                log.exception("job monitor tick failed")
            self._wake.wait(interval)
            self._wake.clear()

    def stop(self) -> None:
        """Stop the monitor; stop the runs of runners that are not durable (their jobs run again at the next start),
        leave the others running (followed again at the next start)."""
        self._stopping.set()
        self._wake.set()
        if self._monitor is not None:
            self._monitor.join(10)
            self._monitor = None
        if not self._started:  # the appliance did not get as far as running jobs
            return
        self._started = False
        for step, job in self._active():
            runner = self.runners.get(step.runner)
            if runner.capabilities.durable:
                self.service.log_line(job, f"the appliance stopped; {step.name} goes on in {step.label}")
                continue
            self._stop_now(runner, step)
            self._step_over(step, RunStatus("lost", reason="the appliance stopped"))
            self.service.interrupted(job, "the appliance was shut down while it ran")

    def _stop_now(self, runner: Runner, step: Step) -> None:
        handle = _handle(step)
        runner.cancel(handle)
        deadline = time.monotonic() + SHUTDOWN_GRACE
        while time.monotonic() < deadline and runner.status([handle])[0].state in ACTIVE_STEP_STATES:
            time.sleep(0.05)
        runner.cancel(handle, force=True)
        for _ in range(50):
            if runner.status([handle])[0].state not in ACTIVE_STEP_STATES:
                break
            time.sleep(0.05)

    def tick(self) -> None:
        """One pass: follow every active run, stop what must stop, move parents, start what can start."""
        self.ticks += 1
        now = self.clock()
        by_runner: dict[str, list[tuple[Step, Job]]] = {}
        for step, job in self._active():
            by_runner.setdefault(step.runner, []).append((step, job))
        for name, rows in by_runner.items():
            runner = self.runners.get(name)
            pace = getattr(runner, "poll_seconds", 0.0)
            if pace and now - self._asked.get(name, 0.0) < pace:
                continue
            self._asked[name] = now
            try:
                statuses = runner.status([_handle(step) for step, _ in rows])
            except Exception as exc:  # the backend did not answer this time: its runs are as they were; ask again
                self._unanswered(name, rows, exc, now)
                continue
            self._silent.pop(name, None)
            for (step, job), status in zip(rows, statuses, strict=True):
                try:
                    self._follow(runner, step, job, status, now)
                except Exception as exc:
                    log.exception("following a step failed", extra={"job": job.id})
                    self.service.end(job, "FAILURE", f"internal error of the appliance: {exc}", None)
        self._move_parents()
        self._admit(now)

    def _unanswered(self, name: str, rows: list[tuple[Step, Job]], exc: Exception, now: float) -> None:
        """The jobs of a runner whose backend does not answer keep their state, with a status that says so."""
        if name not in self._silent:
            log.warning("runner status failed", extra={"runner": name, "error": str(exc)})
            self._silent[name] = now
        since = datetime.fromtimestamp(self._silent[name]).strftime("%H:%M:%S")
        note = f"the {name} runner does not answer since {since} ({exc}); its runs are followed again when it does"
        for step, job in rows:
            if self._notes.get(step.id) != note:
                self._notes[step.id] = note
                self._job_update(job, LIVE_JOB_STATES, status=note[:512])
                self.service.log_line(job, note)

    def _active(self) -> list[tuple[Any, Any]]:
        """The active steps with what the monitor needs of their jobs, as plain rows (building ORM objects for a
        hundred runs cost most of a tick)."""
        with self.db.session() as session:
            rows = session.connection().execute(_ACTIVE).all()
        split = len(_STEP_FIELDS)
        return [
            (SimpleNamespace(**dict(zip(_STEP_FIELDS, row[:split], strict=True))),
             SimpleNamespace(**dict(zip(_JOB_FIELDS, row[split:], strict=True))))
            for row in rows
        ]  # fmt: skip

    def _follow(self, runner: Runner, step: Step, job: Job, status: RunStatus, now: float) -> None:
        handle = _handle(step)
        ended = status.state in ("ended", "lost")
        if ended or now - self._log_copied.get(step.id, 0.0) >= LOG_COPY_SECONDS:
            self._copy_log(runner, step, job, handle)
            self._log_copied[step.id] = now
        if ended:
            self._log_copied.pop(step.id, None)
            self._notes.pop(step.id, None)
            self._step_over(step, status)
            runner.release(handle)
            self._after_step(job, step, status)
            return
        if status.state != step.state or status.note != self._notes.get(step.id, status.note):
            self._observe(job, step, status, now)
        self._notes[step.id] = status.note
        self._stop_if_due(runner, step, job, now)

    def _observe(self, job: Job, step: Step, status: RunStatus, now: float) -> None:
        """A step queued or running: the job is RUNNING once its step is, with what it runs as its status."""
        values: dict[str, Any] = {"state": status.state}
        if status.state == "running" and step.started_at is None:
            values["started_at"] = as_datetime(now)
        total = self._step_count(job.id, job.attempts)
        with self.db.session() as session:
            session.execute(update(Step).where(Step.id == step.id).values(**values))
        step.state = status.state
        said = f": {status.note}" if status.note else ""
        if status.state == "running":
            if job.deadline is None:  # its runner keeps the wall time from when the job runs (a cluster's queue)
                job.deadline = as_datetime(now + job.walltime)
                self._job_update(job, LIVE_JOB_STATES, deadline=job.deadline)
            self._job_update(job, ("STARTED", "RUNNING"), state="RUNNING",
                             status=f"running {step.name} (step {step.number} of {total}){said}")  # fmt: skip
        else:
            self._job_update(job, ("STARTED",), status=f"{step.name} queued by the {step.runner} runner{said}")

    def _stop_if_due(self, runner: Runner, step: Step, job: Job, now: float) -> None:
        why = job.stop_reason
        if why is None:
            if job.cancel_requested_at is not None:
                why = "canceled"
            elif job.deadline is not None and now >= job.deadline.timestamp():
                why = "timed-out"
            else:
                return
            with self.db.session() as session:
                session.execute(update(Job).where(Job.id == job.id).values(stop_reason=why))
        handle = _handle(step)
        if step.term_sent_at is None:
            runner.cancel(handle)
            self.service.log_line(job, f"{'cancel requested' if why == 'canceled' else 'wall-time limit reached'}: "
                                       f"stopping {step.name} ({step.label})")  # fmt: skip
            self._step_update(step, term_sent_at=as_datetime(now))
        elif (
            step.kill_sent_at is None and now - step.term_sent_at.timestamp() >= self.settings.job_cancel_grace_seconds
        ):
            runner.cancel(handle, force=True)
            self.service.log_line(job, f"{step.name} still running after the grace period: killed")
            self._step_update(step, kill_sent_at=as_datetime(now))

    def _copy_log(self, runner: Runner, step: Step, job: Job, handle: Handle) -> None:
        try:
            output = runner.logs(handle, step.log_offset)
        except Exception as exc:  # noqa: BLE001 (the output is copied at the next tick, or is lost with the run)
            log.warning("step logs failed", extra={"job": job.id, "error": str(exc)})
            return
        if output:
            with (self.service.folder(job) / "job.log").open("ab") as job_log:
                job_log.write(output)
            self._step_update(step, log_offset=step.log_offset + len(output))
            step.log_offset += len(output)

    def _step_over(self, step: Step, status: RunStatus) -> None:
        ended_at = as_datetime(self.clock())
        self._step_update(step, state=status.state, exit_code=status.exit_code, reason=status.reason,
                          usage=status.usage, ended_at=ended_at)  # fmt: skip
        step.state, step.exit_code, step.reason, step.usage, step.ended_at = (
            status.state, status.exit_code, status.reason, status.usage, ended_at)  # fmt: skip

    def _after_step(self, job: Job, step: Step, status: RunStatus) -> None:
        """A step has ended: note it, then end the job, start its next step, or hand it to collect."""
        code = status.exit_code
        started = step.started_at or step.submitted_at or step.ended_at
        seconds = (step.ended_at - started).total_seconds() if started and step.ended_at else 0.0
        said = f" ({status.reason})" if status.reason else ""
        if status.state == "lost":
            self.service.log_line(job, f"step {step.number} {step.name} was lost by the {step.runner} runner{said}")
        else:
            self.service.log_line(job, f"step {step.number} ended with exit code {code} after {seconds:.2f} s{said}")
        with self.db.session() as session:
            job = session.get(Job, job.id) or job
        self.service.record_step(job, {"name": step.name, "runner": step.runner, "run": step.label,
                                       "exit_code": code, "reason": status.reason, "seconds": round(seconds, 3),
                                       **status.usage})  # fmt: skip
        if job.stop_reason == "canceled" or job.cancel_requested_at is not None:
            self.service.end(job, "CANCELED", "Job canceled by user", -1 if code is None else code)
        elif job.stop_reason == "timed-out" or status.reason == TIMED_OUT:
            self.service.end(job, "TIMED-OUT", f"wall-time limit of {job.walltime:g} s reached", 124)
        elif status.state == "lost":
            self.service.end(job, "FAILURE", f"{step.name} was lost by the {step.runner} runner: {status.reason}", None)
        elif status.reason == OUT_OF_MEMORY:
            self.service.end(job, "FAILURE", f"{step.name} ran out of memory (exit code {code}); see the job log", code)
        elif code != 0:
            self.service.end(job, "FAILURE", f"{step.name} failed with exit code {code}; see the job log", code)
        else:
            following = self._next_step(job.id, job.attempts, step.number)
            if following is not None:
                self.submit_step(job, following)
            else:
                self._job_update(job, LIVE_JOB_STATES, stage="collect", status="writing the catalogs", handle=None)
                self.enqueue("collect", job.id)

    def _move_parents(self) -> None:
        """Parents waiting for their children: once all have ended, the parent goes on (or ends if one failed)."""
        with self.db.session() as session:
            if not session.connection().execute(_ANY_PARENT).first():
                return
            parents = session.scalars(select(Job).where(Job.stage == "children", Job.state.in_(RUNNING_STATES))).all()
            waiting = []
            for parent in parents:
                live = session.scalar(
                    select(func.count()).where(Job.parent_id == parent.id, Job.state.in_(LIVE_JOB_STATES))
                )
                if not live:
                    rows = session.execute(select(Job.state).where(Job.parent_id == parent.id)).scalars().all()
                    waiting.append((parent, rows))
        for parent, states in waiting:
            failed = [state for state in states if state != "SUCCESS"]
            if parent.cancel_requested_at is not None:
                self.service.end(parent, "CANCELED", "Job canceled by user", -1)
            elif failed:
                self.service.end(parent, "FAILURE", f"{len(failed)} of {len(states)} child jobs did not succeed "
                                                   f"({', '.join(sorted(set(failed)))})", None)  # fmt: skip
            else:
                self.service.log_line(parent, f"all {len(states)} child jobs succeeded")
                self._job_update(parent, RUNNING_STATES, stage="collect", status="writing the catalogs")
                self.enqueue("collect", parent.id)

    def _admit(self, now: float) -> None:
        """Claim PENDING jobs, oldest first per runner, while their runner has the cores; queue their preparation."""
        if self.paused() or self._stopping.is_set():
            return
        with self.db.session() as session:
            pending = session.connection().execute(_PENDING).all()
        if not pending:
            return
        used = self.cores_in_use()
        full: set[str] = set()
        for job_id, runner_name, cores, walltime in pending:
            if runner_name in full:
                continue
            if runner_name not in self.runners or not self.runners.availability(runner_name).available:
                full.add(runner_name)  # waits for its runner; the Apps page says why
                continue
            runner = self.runners.get(runner_name)
            capacity = runner.capacity()
            if capacity is not None and used.get(runner_name, 0) + cores > capacity:
                full.add(runner_name)  # first come first served: a later, smaller job does not overtake it
                continue
            moment = as_datetime(now)
            with self.service.writing() as session:
                claimed = session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.state == "PENDING")
                    .values(
                        state="STARTED",
                        stage="prepare",
                        status="preparing the input image",
                        start_date=moment,
                        attempts=Job.attempts + 1,
                        end_date=None,
                        exit_code=None,
                        stop_reason=None,
                        cancel_requested_at=None,
                        # a runner with its own time limit counts from when the job runs (_observe)
                        deadline=None if runner.capabilities.walltime else moment + timedelta(seconds=walltime),
                    )  # fmt: skip
                ).rowcount
            if claimed:
                used[runner_name] = used.get(runner_name, 0) + cores
                self.enqueue("prepare", job_id)

    # -- queue tasks -----------------------------------------------------------------------------------------

    def prepare(self, job_id: str) -> None:
        """The queue task of a claimed job: prepare its input, record its steps, start the first."""
        job = self._claim_task(job_id, "prepare", "preparing")
        if job is None:
            return
        try:
            self._prepare(job)
        except Exception as exc:  # a bug must still end the job, with the reason in its status and the log
            log.exception("preparing a job failed", extra={"job": job_id})
            self.service.log_line(job, f"internal error: {exc!r}")
            self.service.end(job, "FAILURE", f"internal error of the appliance: {exc}", None)

    def _prepare(self, job: Job) -> None:
        service = self.service
        app = service.apps.get(job.app)
        folder = service.folder(job)
        folder.mkdir(parents=True, exist_ok=True)
        service.log_line(job, f"attempt {job.attempts}: {job.app} on the {job.runner} runner with "
                              f"{_options_text(job.options)}")  # fmt: skip
        try:
            available = self.app_availability(app, job.runner)
            if not available.available:
                raise InvalidRequest("runner_unavailable", available.reason or "the runner is unavailable")
            record = service.files.get(job.user, job.data_inputs)
            notes = prepare_image(
                service.files.path(record),
                record.summary["hdu"],
                folder / INPUT_IMAGE,
                beam_override=app.beam_override(job.options),
                beam_fallback=app.beam_fallback(job.options),
                reads_pv_terms=app.reads_pv_terms,
            )
            for note in notes:
                service.log_line(job, f"input: {note}")
            job_input = service.job_input(job, app, record.summary, self.target(app, job.runner))
            children = app.children(job_input)
            specs = [] if children else app.steps(job_input)
            for note in job_input.notes:
                service.log_line(job, note)
            if children:
                self._fan_out(job, children)
                return
        except ApplianceError as exc:
            service.log_line(job, f"input refused: {exc.message}")
            service.end(job, "FAILURE", f"the input could not be prepared: {exc.message}", None)
            return
        env = {f"{name}_NUM_THREADS": str(job.cores) for name in ("OMP", "OPENBLAS", "MKL")}
        env["MPLBACKEND"] = "Agg"
        specs = [
            replace(spec, job_id=job.id, attempt=job.attempts, step=str(number), workdir=folder,
                    env={**env, **spec.env}, resources=replace(spec.resources, walltime_seconds=job.walltime))
            for number, spec in enumerate(specs, 1)
        ]  # fmt: skip
        steps = [
            Step(job_id=job.id, attempt=job.attempts, number=number, name=spec.name, runner=job.runner,
                 state="waiting", label="", log_offset=0,
                 spec=replace(spec, following=tuple(specs[number:])).to_json())
            for number, spec in enumerate(specs, 1)
        ]  # fmt: skip
        with self.db.session() as session:
            session.add_all(steps)
        if self._stop_before_start(job):
            return
        self.submit_step(job, steps[0])

    def _fan_out(self, job: Job, children: list[Child]) -> None:
        """The job runs as child jobs (a mosaic's tiles): they are recorded PENDING, and the job waits for them all
        to end (``_move_parents``) before its app collects their products."""
        made = self.service.submit_children(job, children)
        self.service.log_line(job, f"runs as {len(made)} child jobs: {', '.join(child.id for child in made)}")
        self._job_update(job, RUNNING_STATES, state="RUNNING", stage="children",
                         status=f"waiting for its {len(made)} child jobs")  # fmt: skip
        self.wake()

    def _stop_before_start(self, job: Job) -> bool:
        with self.db.session() as session:
            current = session.get(Job, job.id)
        if current is None:
            return True
        if current.cancel_requested_at is not None:
            self.service.end(current, "CANCELED", "Job canceled by user", -1)
            return True
        if self._stopping.is_set():
            self.service.interrupted(current, "the appliance was shut down before it started")
            return True
        return False

    def submit_step(self, job: Job, step: Step) -> None:
        spec = RunSpec.from_json(step.spec)
        runner = self.runners.get(step.runner)
        total = self._step_count(job.id, job.attempts)
        command = spec.command if isinstance(spec.command, list) else [spec.command.name, *spec.command.args]
        self.service.log_line(job, f"step {step.number}/{total} {spec.name}: {' '.join(command)}")
        try:
            handle = runner.submit(spec)
        except Exception as exc:  # noqa: BLE001 (the runner said why it cannot start it)
            self._step_update(step, state="lost", reason=str(exc)[:128], ended_at=as_datetime(self.clock()))
            self.service.end(job, "FAILURE", f"the {step.runner} runner could not start {spec.name}: {exc}", None)
            return
        now = self.clock()
        self._step_update(step, state="queued", handle={"runner": handle.runner, **handle.data}, label=handle.label,
                          submitted_at=as_datetime(now))  # fmt: skip
        step.state, step.handle, step.label = "queued", {"runner": handle.runner, **handle.data}, handle.label
        self._job_update(job, LIVE_JOB_STATES, stage="run", handle=step.handle, pid=handle.label)
        try:
            (status,) = runner.status([handle])
        except Exception:  # noqa: BLE001 (the monitor asks again)
            return
        if status.state in ACTIVE_STEP_STATES:
            self._observe(job, step, status, now)

    def collect(self, job_id: str) -> None:
        """The queue task of a job whose steps all succeeded: its products, then SUCCESS."""
        job = self._claim_task(job_id, "collect", "collecting")
        if job is None:
            return
        if job.cancel_requested_at is not None:
            self.service.end(job, "CANCELED", "Job canceled by user", -1)
            return
        self.service.collect(job)

    def _claim_task(self, job_id: str, stage: str, working: str) -> Job | None:
        """The job, if this task is the one that moves it from ``stage`` to ``working`` (a task queued twice, or
        again after a restart, finds it moved and does nothing)."""
        with self.service.writing() as session:
            claimed = session.execute(
                update(Job).where(Job.id == job_id, Job.stage == stage).values(stage=working)
            ).rowcount
            job = session.get(Job, job_id)
        return job if claimed else None

    # -- restart ---------------------------------------------------------------------------------------------

    def recover(self) -> dict[str, int]:
        """At start, before the monitor: follow again the runs of durable runners, stop the others and run their
        jobs again (once), and queue again the tasks of jobs that were being prepared or collected."""
        counts = {"reattached": 0, "orphans_killed": 0, "requeued": 0, "failed": 0, "collect": 0}
        active = {job.id: (step, job) for step, job in self._active()}
        with self.db.session() as session:
            live = session.scalars(select(Job).where(Job.state.in_(RUNNING_STATES))).all()
        for job in live:
            if job.id in active:
                step, _ = active[job.id]
                if step.runner in self.runners and self.runners.get(step.runner).capabilities.durable:
                    self.service.log_line(job, f"the appliance restarted: following {step.name} in {step.label} "
                                               f"again")  # fmt: skip
                    counts["reattached"] += 1
                    continue
                if step.runner in self.runners:
                    self.runners.get(step.runner).cancel(_handle(step), force=True)
                    counts["orphans_killed"] += 1
                    self.service.log_line(
                        job, f"killed the job's processes left running by the stopped appliance ({step.label})"
                    )
                self._step_over(step, RunStatus("lost", reason="the appliance stopped"))
            if job.stage in ("collect", "collecting") and job.state != "CANCELING":
                self._job_update(job, RUNNING_STATES, stage="collect")
                self.enqueue("collect", job.id)
                counts["collect"] += 1
                continue
            if job.stage == "children":
                continue
            if job.state == "CANCELING":
                self.service.end(job, "CANCELED", "Job canceled by user", -1)
                continue
            self.service.interrupted(job, "the appliance stopped while it ran")
            counts["failed" if job.attempts >= MAX_ATTEMPTS else "requeued"] += 1
        return counts

    # -- small helpers ---------------------------------------------------------------------------------------

    def _step_update(self, step: Step, **values: Any) -> None:
        with self.db.session() as session:
            session.execute(update(Step).where(Step.id == step.id).values(**values))

    def _job_update(self, job: Job, states: tuple[str, ...], **values: Any) -> None:
        with self.service.writing() as session:
            session.execute(update(Job).where(Job.id == job.id, Job.state.in_(states)).values(**values))

    def _step_count(self, job_id: str, attempt: int) -> int:
        with self.db.session() as session:
            return session.scalar(
                select(func.count()).select_from(Step).where(Step.job_id == job_id, Step.attempt == attempt)
            ) or 0  # fmt: skip

    def _next_step(self, job_id: str, attempt: int, number: int) -> Step | None:
        with self.db.session() as session:
            return session.scalars(
                select(Step).where(and_(Step.job_id == job_id, Step.attempt == attempt, Step.number == number + 1))
            ).first()

    def steps_of(self, job_id: str) -> list[Step]:
        with self.db.session() as session:
            return list(session.scalars(select(Step).where(Step.job_id == job_id).order_by(Step.attempt, Step.number)))


# what the monitor reads of each active step and its job, in one query made once
_STEP_FIELDS = ("id", "job_id", "attempt", "number", "name", "runner", "state", "handle", "label", "submitted_at",
                "started_at", "ended_at", "term_sent_at", "kill_sent_at", "log_offset")  # fmt: skip
_JOB_FIELDS = ("id", "user", "app", "state", "attempts", "walltime", "deadline", "cancel_requested_at", "stop_reason",
               "runner", "tag")  # fmt: skip
_ACTIVE = (
    select(*(getattr(Step, name) for name in _STEP_FIELDS), *(getattr(Job, name) for name in _JOB_FIELDS))  # fmt: skip
    .join(Job, Step.job_id == Job.id)
    .where(Step.state.in_(ACTIVE_STEP_STATES))
)
_PENDING = (
    select(Job.id, Job.runner, Job.cores, Job.walltime).where(Job.state == "PENDING").order_by(Job.submit_date, Job.id)
)
_ANY_PARENT = select(Job.id).where(Job.state.in_(RUNNING_STATES), Job.stage == "children").limit(1)


def _handle(step: Step) -> Handle:
    data = dict(step.handle or {})
    return Handle(data.pop("runner", step.runner), data)


def _options_text(options: dict[str, Any]) -> str:
    return json.dumps(options, sort_keys=True)


def _not_started(*_: Any) -> Any:
    raise RuntimeError("the job queue is not running")
