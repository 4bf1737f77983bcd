"""The Slurm runner: the steps of a job run as one Slurm batch job, named by the job's id, through Slurm's command
line (``transport = "cli"``: sbatch, squeue, sacct, scontrol, scancel, as argv lists) or slurmrestd
(``transport = "rest"``, in ``runners.slurm_rest``). Its runs outlive the appliance (durable): a restarted appliance
finds its Slurm jobs by the ids it kept, and a cluster that does not answer for a while leaves them as they were.

The batch script (``batch_script``) runs the job's steps in order in the job folder, each one's output in
``.<run>.log`` and, when it ends, its exit code in ``.<run>.exit``; it stops at the first step that fails, skips
steps already done (a requeued job resumes) and passes SIGTERM on to the running step. **Success is read from that
file**, the scheduler's state second: Slurm's state says why a step that left no exit code ended (TIMEOUT,
OUT_OF_MEMORY, NODE_FAIL, CANCELLED), and a job Slurm no longer knows at all is judged by the file alone.

The engine submits a job's steps one after the other; here the first submit starts the Slurm job for all of them
(``RunSpec.following``) and records its id in ``.<job>-<attempt>.slurm`` in the job folder, and each later submit
answers with that job, so a two-step job waits in the cluster's queue once.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from runners import (
    KILLED,
    LOST,
    NODE_FAILURE,
    OUT_OF_MEMORY,
    TIMED_OUT,
    Availability,
    CannotStart,
    Capabilities,
    Handle,
    RunSpec,
    RunStatus,
    StatusUnavailable,
    argv_of,
    write_files,
)

# Slurm's job states (first word of sacct's "CANCELLED by 0"), by what they mean for a step
WAITING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED", "STOPPED",
           "RESV_DEL_HOLD", "SPECIAL_EXIT"}  # fmt: skip
RUNNING = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT"}
ENDED_BECAUSE = {"TIMEOUT": TIMED_OUT, "DEADLINE": TIMED_OUT, "OUT_OF_MEMORY": OUT_OF_MEMORY,
                 "NODE_FAIL": NODE_FAILURE, "BOOT_FAIL": NODE_FAILURE, "CANCELLED": KILLED, "PREEMPTED": "preempted",
                 "REVOKED": "revoked by the federation"}  # fmt: skip
ENDED = {"COMPLETED", "FAILED", *ENDED_BECAUSE}
ENVIRONMENTS = ("appliance", "podman", "apptainer", "singularity")
JOB_DIR = "/job"  # the job folder inside a container
AVAILABILITY_SECONDS = 10.0
PROBE_RETRY_SECONDS = 60.0
_SLURM_ID = re.compile(r"^\d+(_\d+)?$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # an environment variable's name


@dataclass(frozen=True)
class SlurmJob:
    """What the cluster says of one of its jobs."""

    id: str
    state: str  # Slurm's word: PENDING, RUNNING, COMPLETED, TIMEOUT, ...
    reason: str | None = None  # why it waits ("Resources", "Priority"); None when it does not
    exit_code: int | None = None  # the batch script's exit code, once ended
    signal: int | None = None  # the signal that ended it, if one did


@dataclass(frozen=True)
class Submission:
    """A batch job to submit: the script and the sbatch options the runner fills from the job."""

    script: str
    name: str
    workdir: str  # as the cluster sees it
    output: str  # the batch script's own stdout and stderr, as the cluster sees it
    cpus_per_task: int
    tasks: int = 1
    memory_mb: int | None = None
    time_minutes: int | None = None
    gpus: int = 0
    partition: str = ""
    account: str = ""
    qos: str = ""
    extra_args: tuple[str, ...] = ()


class SlurmUnavailable(StatusUnavailable):
    """The cluster's controller did not answer (or its commands are missing): nothing about its jobs is known."""


class Transport(Protocol):
    """How the runner talks to the cluster: its command line, or slurmrestd."""

    def ping(self) -> None:
        """Return if the controller answers; raise SlurmUnavailable with the reason if not."""

    def submit(self, job: Submission) -> str:
        """Submit the batch job, return its Slurm id; raise CannotStart with Slurm's reason when it is refused."""

    def jobs(self, ids: list[str]) -> dict[str, SlurmJob]:
        """What the cluster knows of these jobs, in as few calls as it allows whatever their number (the queue, then
        accounting, or the controller's memory when accounting is off); the ones it knows nothing of are left out.
        Raise SlurmUnavailable when it does not answer."""

    def cancel(self, id: str, force: bool) -> None:
        """Send SIGTERM to the batch script and its children (a pending job is removed from the queue), or cancel
        the job outright with ``force``."""


class SlurmCli:
    """Slurm's own commands, found on PATH (or in ``bin_dir``), with ``SLURM_CONF`` from the environment as they take
    it. Active jobs come from one ``squeue`` call; jobs that left the queue from one ``sacct`` call, or from
    ``scontrol show job`` (within the controller's MinJobAge) when accounting is off."""

    def __init__(self, bin_dir: str = "", timeout: float = 30.0) -> None:
        self.bin_dir = bin_dir
        self.timeout = timeout
        self.accounting: bool | None = None  # unknown until sacct has been asked
        self.calls: dict[str, int] = {}  # how often each command ran, for the benchmark

    def _program(self, name: str) -> str:
        if self.bin_dir:
            return str(Path(self.bin_dir) / name)
        return shutil.which(name) or name

    def _run(self, name: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        self.calls[name] = self.calls.get(name, 0) + 1
        try:
            return subprocess.run([self._program(name), *args], capture_output=True, text=True, input=stdin,
                                  timeout=self.timeout, stdin=None if stdin is not None else subprocess.DEVNULL)  # fmt: skip
        except FileNotFoundError as exc:
            raise SlurmUnavailable(
                f"Slurm's {name} is not installed here (Debian/Ubuntu: sudo apt-get install slurm-client), or set "
                "runners.slurm.bin_dir to its folder"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise SlurmUnavailable(f"{name} did not answer within {self.timeout:.0f} s") from exc

    def ping(self) -> None:
        answer = self._run("scontrol", "ping")
        if answer.returncode != 0 or "is UP" not in answer.stdout:
            raise SlurmUnavailable(f"the Slurm controller does not answer: {_said(answer)}")

    def submit(self, job: Submission) -> str:
        args = ["--parsable", f"--job-name={job.name}", f"--chdir={job.workdir}", f"--output={job.output}",
                "--open-mode=append", f"--ntasks={job.tasks}", f"--cpus-per-task={job.cpus_per_task}"]  # fmt: skip
        if job.memory_mb:
            args.append(f"--mem={job.memory_mb}M")
        if job.time_minutes:
            args.append(f"--time={job.time_minutes}")
        if job.gpus:
            args.append(f"--gpus={job.gpus}")
        for option, value in (("partition", job.partition), ("account", job.account), ("qos", job.qos)):
            if value:
                args.append(f"--{option}={value}")
        try:
            self.calls["sbatch"] = self.calls.get("sbatch", 0) + 1
            answer = subprocess.run([self._program("sbatch"), *args, *job.extra_args], input=job.script, text=True,
                                    capture_output=True, timeout=self.timeout)  # fmt: skip
        except FileNotFoundError as exc:
            raise CannotStart("Slurm's sbatch is not installed here (or set runners.slurm.bin_dir)") from exc
        except subprocess.TimeoutExpired as exc:
            raise CannotStart(f"sbatch did not answer within {self.timeout:.0f} s") from exc
        found = re.match(r"^(\d+)", answer.stdout.strip())
        if answer.returncode != 0 or not found:
            raise CannotStart(f"Slurm refused the job: {_said(answer)}")
        return found.group(1)

    def jobs(self, ids: list[str]) -> dict[str, SlurmJob]:
        if not ids:
            return {}
        found = self._queue(ids)
        # an ended job still in the queue's memory: the controller has its exit code, exact and at once (slurmdbd
        # gets a job's records seconds late, and shows a stand-in "allocation" line meanwhile)
        ended = [id for id in ids if id in found and found[id].state in ENDED]
        gone = [id for id in ids if id not in found]
        known = self._controller(ended + gone) if ended or (gone and self.accounting is False) else {}
        found.update({id: job for id, job in known.items() if id in found or id in gone})
        gone = [id for id in gone if id not in known]
        if gone and self.accounting is not False:
            accounted = self._accounting(gone)
            found.update(self._controller(gone) if accounted is None else accounted)
        return found

    def _queue(self, ids: list[str]) -> dict[str, SlurmJob]:
        # all states: a job that just ended is still in the queue's memory, with its state
        answer = self._run("squeue", "--noheader", "--states=all", f"--jobs={','.join(ids)}",
                           "--format=%i|%T|%r")  # fmt: skip
        if answer.returncode != 0:
            if "Invalid job id" in answer.stderr:  # none of them is known any more
                return {}
            raise SlurmUnavailable(f"squeue failed: {_said(answer)}")
        found = {}
        for line in answer.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 3 and parts[0] in ids:
                id, state, reason = parts
                found[id] = SlurmJob(id, state.split()[0], _reason(reason))
        return found

    def _accounting(self, ids: list[str]) -> dict[str, SlurmJob] | None:
        """From sacct, or None when accounting is off here."""
        answer = self._run("sacct", "-X", "-P", "-n", f"--jobs={','.join(ids)}", "--format=JobID,State,ExitCode,Reason")
        if answer.returncode != 0 or "accounting storage is disabled" in (answer.stdout + answer.stderr):
            if "disabled" in (answer.stdout + answer.stderr) or "not running" in answer.stderr.lower():
                self.accounting = False
                return None
            raise SlurmUnavailable(f"sacct failed: {_said(answer)}")
        self.accounting = True
        found = {}
        for line in answer.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) >= 3 and parts[0] in ids:
                code, signal = _exit_code(parts[2])
                found[parts[0]] = SlurmJob(parts[0], parts[1].split()[0], None, code, signal)
        return found

    def _controller(self, ids: list[str]) -> dict[str, SlurmJob]:
        """From the controller's memory of recently ended jobs: one ``scontrol -o show job`` of them all."""
        answer = self._run("scontrol", "-o", "show", "job")
        if answer.returncode != 0:
            if "Invalid job id" in answer.stderr or "No jobs" in answer.stdout:
                return {}
            raise SlurmUnavailable(f"scontrol failed: {_said(answer)}")
        found = {}
        for line in answer.stdout.splitlines():
            fields = dict(re.findall(r"(\w+)=(\S*)", line))
            if fields.get("JobId") in ids:
                code, signal = _exit_code(fields.get("ExitCode", ""))
                found[fields["JobId"]] = SlurmJob(fields["JobId"], fields.get("JobState", "UNKNOWN"),
                                                  _reason(fields.get("Reason", "")), code, signal)  # fmt: skip
        return found

    def cancel(self, id: str, force: bool) -> None:
        if force:
            self._run("scancel", id)
            return
        self._run("scancel", "--state=PENDING", id)  # a job still waiting is only taken out of the queue
        self._run("scancel", "--signal=TERM", "--full", id)


class SlurmRunner:
    """Settings (``[runners.slurm]`` in appliance.toml), with their defaults:

    - ``transport`` = "cli": Slurm's commands on this machine; "rest": slurmrestd (``rest_url``, ``token_file`` or
      ``token_command``, ``user``, ``api_version``).
    - ``bin_dir`` = "": the folder of Slurm's commands, when they are not on PATH.
    - ``partition``, ``account``, ``qos`` = "": sbatch's options of the same names ("": the cluster's default).
    - ``extra_args`` = []: more sbatch options (``["--constraint=avx2"]``); only with the cli transport.
    - ``memory_mb`` = 0: ``--mem`` of a job whose app asks for no memory (0: the cluster's default).
    - ``path_map`` = {}: this machine's folders as the cluster's nodes see them, {"/home/lab/.local/share" =
      "/nfs/lab"}: every path of a job (its folder, the appliance's Python, the finders' programs) under a key is
      given to the cluster under its value. Empty: the nodes see the same paths (one machine, or the same mounts).
    - ``environment`` = "appliance": what runs the steps on the nodes: the appliance's own Python (``python``), which
      the nodes must see through the path map; or "podman", "apptainer", "singularity": the app's image
      (``image`` overrides it: an image name for podman, a .sif file or an image URI for apptainer).
    - ``python`` = "": the nodes' Python of the appliance ("": this appliance's, through the path map).
    - ``container_args`` = []: more options of ``podman run`` or ``apptainer exec``.
    - ``check_files`` = true: at start (and again each minute while it fails), a small probe job writes a file in
      the jobs folder as the cluster sees it; when it has run and this machine does not see the file, the runner is
      unavailable with the reason (while it waits in the cluster's queue, jobs are sent as usual).
    - ``poll_seconds`` = 1: how often the cluster is asked how its jobs are (one squeue for all of them).
    """

    name = "slurm"

    def __init__(
        self,
        transport: str = "cli",
        bin_dir: str = "",
        partition: str = "",
        account: str = "",
        qos: str = "",
        extra_args: list[str] | tuple[str, ...] = (),
        memory_mb: int = 0,
        path_map: dict[str, str] | None = None,
        environment: str = "appliance",
        python: str = "",
        image: str = "",
        container_args: list[str] | tuple[str, ...] = (),
        check_files: bool = True,
        poll_seconds: float = 1.0,
        jobs_dir: str = "",
        rest_url: str = "",
        token_file: str = "",
        token_command: list[str] | tuple[str, ...] = (),
        user: str = "",
        api_version: str = "v0.0.38",
        timeout: float = 30.0,
    ) -> None:
        if environment not in ENVIRONMENTS:
            raise ValueError(f"runners.slurm.environment must be one of {', '.join(ENVIRONMENTS)}, not {environment!r}")
        self.transport: Transport
        if transport == "cli":
            self.transport = SlurmCli(bin_dir, timeout)
        elif transport == "rest":
            from runners.slurm_rest import SlurmRest

            self.transport = SlurmRest(rest_url, token_file=token_file, token_command=list(token_command), user=user,
                                       api_version=api_version, timeout=timeout)  # fmt: skip
        else:
            raise ValueError(f'runners.slurm.transport must be "cli" or "rest", not {transport!r}')
        if extra_args and transport != "cli":
            raise ValueError('runners.slurm.extra_args are sbatch options: only with transport = "cli"')
        self.partition, self.account, self.qos = partition, account, qos
        self.extra_args = tuple(extra_args)
        self.memory_mb = memory_mb
        # the longest local prefix first, so that a folder mapped inside a mapped folder wins
        self.path_map = sorted(((str(Path(k)), str(Path(v))) for k, v in (path_map or {}).items()),
                               key=lambda pair: -len(pair[0]))  # fmt: skip
        self.environment = environment
        self.python = python or self.cluster_path(sys.executable)
        self.image = image
        self.container_args = list(container_args)
        self.check_files = check_files and bool(jobs_dir)
        self.jobs_dir = Path(jobs_dir) if jobs_dir else None
        self.poll_seconds = poll_seconds
        self.capabilities = Capabilities(durable=True, containers=environment != "appliance", shared_filesystem=True,
                                         gpus=False, walltime=True)  # fmt: skip
        self._availability: tuple[float, Availability] | None = None
        self._probe: dict[str, Any] | None = None  # the probe job of the path check, while it runs
        self._probe_result: tuple[float, str | None] | None = None  # when it ended, and what was wrong (None: fine)
        self._lock = threading.Lock()

    # -- paths ---------------------------------------------------------------------------------------------------

    def cluster_path(self, path: str | Path) -> str:
        """``path`` of this machine as the cluster's nodes see it."""
        text = str(path)
        for local, remote in self.path_map:
            if text == local or text.startswith(local.rstrip("/") + "/"):
                return remote + text[len(local) :]
        return text

    # -- the protocol --------------------------------------------------------------------------------------------

    def availability(self) -> Availability:
        now = time.monotonic()
        with self._lock:
            if self._availability and now - self._availability[0] < AVAILABILITY_SECONDS and self._probe is None:
                return self._availability[1]
            try:
                self.transport.ping()
                found = self._files_seen(now)
            except StatusUnavailable as exc:
                found = Availability(False, str(exc))
            self._availability = (now, found)
            return found

    def _files_seen(self, now: float) -> Availability:
        """Whether a job on the cluster can write in the jobs folder that this machine reads (the probe's answer)."""
        if not self.check_files or self.jobs_dir is None:
            return Availability(True)
        if self._probe_result and (self._probe_result[1] is None or now - self._probe_result[0] < PROBE_RETRY_SECONDS):
            reason = self._probe_result[1]
            return Availability(reason is None, reason)
        if self._probe is None:
            self._probe = self._submit_probe()
            if "error" in self._probe:
                error, self._probe = self._probe["error"], None
                self._probe_result = (now, error)
                return Availability(False, error)
        probe = self._probe
        local = Path(probe["file"])
        if local.exists():
            written = local.read_text().strip()
            local.unlink(missing_ok=True)
            self._probe = None
            error = None if written == probe["token"] else f"the probe job wrote {written!r} into {local}"
            self._probe_result = (now, error)
            return Availability(error is None, error)
        job = self.transport.jobs([probe["id"]]).get(probe["id"])
        if job is not None and job.state not in ENDED:
            # waiting in a busy cluster's queue, as the jobs would: they are not held back for it
            return Availability(True)
        if job is not None and job.state == "COMPLETED":
            probe.setdefault("ended_at", now)
            if now - probe["ended_at"] < 5:  # a shared filesystem may show another machine's file a moment late
                return Availability(False, "checking that the cluster sees the jobs folder (waiting for its file)")
        self._probe = None
        error = (
            f"a job on the cluster could not write into the jobs folder as it sees it "
            f"({self.cluster_path(self.jobs_dir)}, for {self.jobs_dir} here): probe job {probe['id']} "
            f"{job.state if job else 'vanished'}; set runners.slurm.path_map to where the nodes see it"
        )
        self._probe_result = (now, error)
        return Availability(False, error)

    def _submit_probe(self) -> dict[str, Any]:
        assert self.jobs_dir is not None
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        local = self.jobs_dir / f".slurm-probe-{token}"
        remote = self.cluster_path(local)
        script = f"#!/bin/sh\nprintf '%s\\n' {token} >{shlex.quote(remote + '.part')} && " \
                 f"mv {shlex.quote(remote + '.part')} {shlex.quote(remote)}\n"  # fmt: skip
        try:
            id = self.transport.submit(Submission(
                script=script, name="caesar-appliance-probe", workdir=self.cluster_path(self.jobs_dir),
                output="/dev/null", cpus_per_task=1, time_minutes=1, partition=self.partition,
                account=self.account, qos=self.qos, extra_args=self.extra_args))  # fmt: skip
        except CannotStart as exc:
            return {"error": f"the probe job could not be submitted: {exc.reason}"}
        return {"id": id, "file": str(local), "token": token}

    def capacity(self) -> None:
        return None  # the cluster queues by itself

    def submit(self, spec: RunSpec) -> Handle:
        record = _record_file(spec)
        known = _read_json(record)
        if known is not None and spec.step in known["steps"]:  # this job's Slurm job is already there
            return self._handle(spec, known["id"])
        specs = [spec, *spec.following]
        for each in specs:
            write_files(each)
            for path in _run_files(each.workdir, each.run_name).values():
                path.unlink(missing_ok=True)  # of an earlier submission of this attempt that was not recorded
        resources = spec.resources
        tasks = max(1, resources.tasks)
        walltime = resources.walltime_seconds
        workdir = self.cluster_path(spec.workdir.resolve())
        id = self.transport.submit(Submission(
            script=self.batch_script(specs), name=spec.job_id or spec.run_name, workdir=workdir,
            output=f"{workdir}/.{_job_name(spec)}.slurm.out", cpus_per_task=max(1, resources.cores // tasks),
            tasks=tasks, memory_mb=resources.memory_mb or self.memory_mb or None,
            time_minutes=math.ceil(walltime / 60) if walltime else None, gpus=resources.gpus,
            partition=self.partition, account=self.account, qos=self.qos, extra_args=self.extra_args))  # fmt: skip
        partial = record.with_name(record.name + ".part")
        partial.write_text(json.dumps({"id": id, "steps": [each.step for each in specs]}))
        os.replace(partial, record)
        return self._handle(spec, id)

    def _handle(self, spec: RunSpec, id: str) -> Handle:
        workdir = spec.workdir.resolve()
        return Handle(self.name, {"id": id, "label": f"slurm job {id}", "run": spec.run_name, "workdir": str(workdir),
                                  "output": str(workdir / f".{_job_name(spec)}.slurm.out")})  # fmt: skip

    def status(self, handles: list[Handle]) -> list[RunStatus]:
        # a Slurm id is a number (an array task's 12_3); anything else is no job of the cluster's
        ids = sorted({str(handle.data["id"]) for handle in handles if _SLURM_ID.match(str(handle.data["id"]))})
        jobs = self.transport.jobs(ids)
        return [self._status(handle, jobs.get(handle.data["id"])) for handle in handles]

    def _status(self, handle: Handle, job: SlurmJob | None) -> RunStatus:
        files = _run_files(Path(handle.data["workdir"]), handle.data["run"])
        exited = _read_json(files["exit"])
        native = job.state if job else "unknown"
        if exited is not None:
            code = int(exited["exit_code"])
            usage = {"seconds": float(exited["seconds"])} if exited.get("seconds") is not None else {}
            if code == 0:
                return RunStatus("ended", exit_code=0, usage=usage, native_state=native)
            if job is not None and job.state not in ENDED:
                # it failed; Slurm says why (TIMEOUT, OUT_OF_MEMORY) once the batch script has ended
                return RunStatus("running", native_state=native)
            return RunStatus("ended", exit_code=_signed(code, job), reason=self._reason(job, files, handle),
                             usage=usage, native_state=native)  # fmt: skip
        if job is None:
            return RunStatus("lost", reason=f"{LOST} by the cluster: Slurm has no record of job {handle.data['id']} "
                                            f"and the step left no exit code", native_state="unknown")  # fmt: skip
        if job.state in WAITING:
            note = job.reason or (job.state.lower() if job.state != "PENDING" else None)
            return RunStatus("queued", native_state=native, note=note and f"Slurm: {note}")
        if job.state in RUNNING or job.state not in ENDED:
            return RunStatus("running", native_state=native)
        if job.state == "COMPLETED":
            return RunStatus("lost", reason=f"Slurm job {job.id} completed but the step left no exit code",
                             native_state=native)  # fmt: skip
        code = -job.signal if job.signal else job.exit_code
        if not code:  # scancel and the node's end leave "0:0": the step was killed all the same
            code = -9
        return RunStatus("ended", exit_code=code, reason=self._reason(job, files, handle), native_state=native)

    def _reason(self, job: SlurmJob | None, files: dict[str, Path], handle: Handle) -> str | None:
        if job is None:
            return None
        if job.state in ENDED_BECAUSE:
            return ENDED_BECAUSE[job.state]
        if _over_memory(Path(handle.data.get("output", "/nonexistent"))):
            return OUT_OF_MEMORY
        return KILLED if files["cancel"].exists() else None

    def cancel(self, handle: Handle, force: bool = False) -> None:
        cancel_file = _run_files(Path(handle.data["workdir"]), handle.data["run"])["cancel"]
        try:
            cancel_file.write_text("force\n" if force else "term\n")
        except OSError:
            pass  # its folder is gone; the job is stopped all the same

        def send() -> None:
            try:
                self.transport.cancel(handle.data["id"], force)
            except StatusUnavailable:
                pass  # the engine sends it again after the grace period (force); the cluster may be back then

        # not waited for: a busy controller may take seconds to answer, and the end is seen by status
        threading.Thread(target=send, name=f"scancel-{handle.data['id']}", daemon=True).start()

    def logs(self, handle: Handle, offset: int) -> bytes:
        log = _run_files(Path(handle.data["workdir"]), handle.data["run"])["log"]
        try:
            with log.open("rb") as file:
                file.seek(offset)
                return file.read()
        except FileNotFoundError:
            return b""

    def release(self, handle: Handle) -> None:
        for kind, path in _run_files(Path(handle.data["workdir"]), handle.data["run"]).items():
            if kind != "log":  # the log stays beside the products, as the local runner's does
                path.unlink(missing_ok=True)

    # -- the batch script ------------------------------------------------------------------------------------

    def batch_script(self, specs: list[RunSpec]) -> str:
        """A POSIX shell script running ``specs`` in order. Every value in it is a quoted word: no option of a
        step (a file name, a string option) can become shell syntax."""
        first = specs[0]
        threads = str(max(1, first.resources.cores // max(1, first.resources.tasks)))
        lines = [
            "#!/bin/sh",
            f"# caesar-appliance job {_comment(first.job_id)}, attempt {first.attempt}: "
            + ", ".join(_comment(spec.name) for spec in specs),
            _RUN_STEP,
            f"cd {shlex.quote(self.cluster_path(first.workdir.resolve()))} || exit 1",
            *(f"export {name}_NUM_THREADS={threads}" for name in ("OMP", "OPENBLAS", "MKL")),
        ]
        for spec in specs:
            workdir = self.cluster_path(spec.workdir.resolve())
            files = {kind: f"{workdir}/{path.name}" for kind, path in _run_files(spec.workdir, spec.run_name).items()}
            command = self.step_command(spec)
            lines.append(f"run_step {shlex.join([files['exit'], files['log'], *command])} || exit $?")
        return "\n".join(lines) + "\n"

    def step_command(self, spec: RunSpec) -> list[str]:
        """The argv that runs ``spec`` on a node: with its environment, in the appliance's Python or the image."""
        for key in spec.env:
            if not _NAME.match(key):
                raise CannotStart(f"the step {spec.name} has an environment variable with a bad name: {key!r}")
        if self.environment == "appliance":
            argv = [self.cluster_path(arg) if arg.startswith("/") else arg
                    for arg in argv_of(spec, [self.python, "-m", "appliance"])]  # fmt: skip
            return ["env", *(f"{key}={value}" for key, value in spec.env.items()), *argv]
        image = self.image or spec.image
        if not image:
            raise CannotStart(f"the step {spec.name} names no image and runners.slurm.image is empty")
        argv = argv_of(spec, ["python3", "-m", "appliance"])
        workdir = self.cluster_path(spec.workdir.resolve())
        mounts = [(workdir, JOB_DIR, "rw")] + [
            (self.cluster_path(os.path.realpath(spec.workdir / name)), f"{JOB_DIR}/{name}", "ro") for name in spec.inputs
        ]  # fmt: skip
        env = {"HOME": JOB_DIR, "MPLBACKEND": "Agg", **spec.env}
        if self.environment == "podman":
            command = ["podman", "run", "--rm", "--name", spec.run_name, "--network", "none", "--init",
                       "--user", f"{os.getuid()}:{os.getgid()}", "--workdir", JOB_DIR]  # fmt: skip
            for source, target, mode in mounts:
                command += ["--volume", f"{source}:{target}:{mode}"]
            for key, value in env.items():
                command += ["--env", f"{key}={value}"]
            return [*command, *self.container_args, image, *argv]
        command = [self.environment, "exec", "--containall", "--no-home", "--pwd", JOB_DIR]
        for source, target, mode in mounts:
            command += ["--bind", f"{source}:{target}:{mode}"]
        for key, value in env.items():
            command += ["--env", f"{key}={value}"]
        return [*command, *self.container_args, image, *argv]


# The batch script's one function: run a step (argv: its exit file, its log, the command) unless its exit file says
# it succeeded before (a requeued job); SIGTERM, INT and HUP are passed on to it; its exit code goes to the exit file
# (written whole, then moved into place); the function returns that code.
_RUN_STEP = r"""run_step() {
    exit_file=$1; log=$2; shift 2
    if [ -r "$exit_file" ] && grep -q '"exit_code": 0,' "$exit_file"; then return 0; fi
    begun=$(date +%s)
    "$@" >>"$log" 2>&1 &
    child=$!
    trap 'kill -TERM "$child" 2>/dev/null' TERM
    trap 'kill -INT "$child" 2>/dev/null' INT
    trap 'kill -HUP "$child" 2>/dev/null' HUP
    wait "$child"; code=$?
    while kill -0 "$child" 2>/dev/null; do wait "$child"; code=$?; done
    trap - TERM INT HUP
    printf '{"exit_code": %d, "seconds": %d}\n' "$code" "$(( $(date +%s) - begun ))" >"$exit_file.part"
    mv -f "$exit_file.part" "$exit_file"
    return "$code"
}"""


def _job_name(spec: RunSpec) -> str:
    return f"caesar-appliance-{spec.job_id}-{spec.attempt}"


def _record_file(spec: RunSpec) -> Path:
    """Where the Slurm id of this job's attempt is kept, in its folder."""
    return spec.workdir / f".{_job_name(spec)}.slurm"


def _run_files(workdir: Path, run: str) -> dict[str, Path]:
    return {kind: workdir / f".{run}.{kind}" for kind in ("log", "exit", "cancel")}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _over_memory(output: Path) -> bool:
    """Whether slurmstepd wrote in the batch job's output that it killed the job for its memory: without cgroups
    (jobacct_gather's OverMemoryKill) Slurm 22.05 ends such a job FAILED (JobLaunchFailure), not OUT_OF_MEMORY."""
    try:
        with output.open("rb") as file:
            file.seek(max(0, output.stat().st_size - 65536))
            tail = file.read()
    except OSError:
        return False
    return b"Exceeded job memory limit" in tail or b"exceeded memory limit" in tail or b"oom-kill" in tail


def _signed(code: int, job: SlurmJob | None) -> int:
    """The shell's 128 + N (killed by signal N) as -N when the cluster stopped it."""
    if job is not None and job.state in ENDED_BECAUSE and 128 < code < 160:
        return 128 - code
    return code


def _exit_code(text: str) -> tuple[int | None, int | None]:
    """Slurm's "code:signal"."""
    found = re.match(r"^(\d+):(\d+)$", text.strip())
    if not found:
        return None, None
    code, signal = int(found.group(1)), int(found.group(2))
    return code, signal or None


def _reason(text: str) -> str | None:
    text = text.strip().strip("()")
    return None if text in ("", "None", "(null)") else text


def _comment(text: str) -> str:
    return re.sub(r"[^\w .,:+-]", "_", text)


def _said(answer: subprocess.CompletedProcess[str]) -> str:
    lines = (answer.stderr.strip() or answer.stdout.strip()).splitlines()
    return lines[-1] if lines else f"exit code {answer.returncode}"
