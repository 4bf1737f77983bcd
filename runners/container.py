"""The container runner: each step is a detached container of the docker or podman command line, with the job folder
bind-mounted at ``/job``. Its runs outlive the appliance (durable): a container is found again by its name, made
from the job, attempt and step, and kept after it ends until ``release`` so that its exit code and log can be read.

Inside the container the step runs under a small POSIX-shell entry (``ENTRY`` below) that passes signals on to it,
sends its output to ``/job/.<run>.log`` and, when it ends, writes ``/job/.<run>.exit``: its exit code and what its
cgroup counted (OOM kills, CPU time, peak memory). podman 4.3 reports ``OOMKilled`` false for every container on
cgroup v1, so an OOM kill is told by the cgroup's own ``oom_kill`` counter, read from inside before the cgroup goes.
So an image needs ``/bin/sh`` (every image the appliance uses has one); in an image without, the step fails and its
log is what the engine caught.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from runners import (
    KILLED,
    OUT_OF_MEMORY,
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

JOB_DIR = "/job"
LABEL = "caesar-appliance"

# argv: exit file, log file, then the command. Signals reach the command through the trap (``wait`` returns early
# when one arrives; the loop then waits for the command itself). Only shell built-ins after the command ends.
ENTRY = r"""
exit_file=$1; log=$2; shift 2
"$@" >>"$log" 2>&1 &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM
trap 'kill -INT "$child" 2>/dev/null' INT
trap 'kill -HUP "$child" 2>/dev/null' HUP
wait "$child"; code=$?
while kill -0 "$child" 2>/dev/null; do wait "$child"; code=$?; done
oom=0; cpu_ns=null; peak=null
for f in /sys/fs/cgroup/memory/memory.oom_control /sys/fs/cgroup/memory.events; do
    if [ -r "$f" ]; then while read -r key value; do [ "$key" = oom_kill ] && oom=$value; done <"$f"; fi
done
[ -r /sys/fs/cgroup/cpuacct/cpuacct.usage ] && read -r cpu_ns </sys/fs/cgroup/cpuacct/cpuacct.usage
if [ -r /sys/fs/cgroup/cpu.stat ]; then
    while read -r key value; do [ "$key" = usage_usec ] && cpu_ns=${value}000; done </sys/fs/cgroup/cpu.stat
fi
[ -r /sys/fs/cgroup/memory/memory.max_usage_in_bytes ] && read -r peak </sys/fs/cgroup/memory/memory.max_usage_in_bytes
[ -r /sys/fs/cgroup/memory.peak ] && read -r peak </sys/fs/cgroup/memory.peak
printf '{"exit_code": %d, "oom_kill": %d, "cpu_ns": %s, "peak_bytes": %s}\n' "$code" "$oom" "$cpu_ns" "$peak" \
    >"$exit_file"
exit "$code"
"""

QUEUED = {"created", "configured", "initialized"}
_NO_SUCH = re.compile(r"no such (container|object)", re.IGNORECASE)  # how both engines say a name is unknown
RUNNING = {"running", "paused", "stopping", "restarting"}
# The engine's answer to ``version`` is kept this long: availability is asked for every listing of apps.
AVAILABILITY_SECONDS = 10.0


def default_image() -> str:
    """The image of steps that name none: this appliance's finders, as ``./manage image`` builds it."""
    from appliance import __version__

    return f"caesar-appliance-finders:{__version__}"


class ContainerRunner:
    """Settings (``[runners.container]`` in appliance.toml), with their defaults:

    - ``engine`` = "": "podman" or "docker"; empty: podman, else docker, whichever is found on PATH first.
    - ``binary`` = "": the engine's command line program, when not the engine's name on PATH.
    - ``cores`` = 0: cores its steps may hold at once; 0: all of this machine's.
    - ``network`` = "none": the network of each container (``--network``); "none" keeps steps offline.
    - ``pull`` = false: never pull (``--pull never``; a missing image is an error that says how to get it); true:
      pull a missing image before its first run (``--pull missing``; that submit waits for the pull).
    - ``grace_seconds`` = 10: how long a cancelled step has between SIGTERM and SIGKILL (``stop -t``).
    - ``user`` = "": ``--user`` of the containers; empty: the appliance's own uid:gid, so that what a step writes in
      the job folder belongs to the appliance's user.
    - ``python`` = "python3": how images start Python, for steps that run one of the appliance's tools
      (``python3 -m appliance tool NAME ARGS``).
    - ``image`` = "": the image of steps that name none; empty: ``caesar-appliance-finders:<version>``.
    - ``gpus`` = false: whether this machine gives GPUs to containers (docker ``--gpus N``, podman's CDI device
      ``nvidia.com/gpu=all``).
    - ``extra_args`` = []: more options of ``run``, added before the image (``--security-opt``, ``--shm-size``).
    - ``extra_global_args`` = []: options before the engine's subcommand (podman ``--root``/``--runroot``,
      docker ``--host``).
    """

    name = "container"

    def __init__(
        self,
        engine: str = "",
        binary: str = "",
        cores: int = 0,
        network: str = "none",
        pull: bool = False,
        grace_seconds: float = 10,
        user: str = "",
        python: str = "python3",
        image: str = "",
        gpus: bool = False,
        extra_args: list[str] | tuple[str, ...] = (),
        extra_global_args: list[str] | tuple[str, ...] = (),
    ) -> None:
        if engine not in ("", "podman", "docker"):
            raise ValueError(
                f"runners.container.engine must be podman or docker (or empty to find one), not {engine!r}"
            )
        self.engine, self.binary = _find_engine(engine, binary)
        self.cores = cores or psutil.cpu_count() or 1
        self.network = network
        self.pull = pull
        self.grace_seconds = grace_seconds
        self.user = user or f"{os.getuid()}:{os.getgid()}"
        self.user_given = bool(user)
        self.python = python
        self.image = image or default_image()
        self.extra_args = list(extra_args)
        self.extra_global_args = list(extra_global_args)
        self.capabilities = Capabilities(durable=True, containers=True, shared_filesystem=True, gpus=gpus)
        self._availability: tuple[float, Availability] | None = None
        self._signalling: list[subprocess.Popen[bytes]] = []

    # -- the engine's command line -------------------------------------------------------------------------------

    def _cli(self, *args: str) -> list[str]:
        return [self.binary or self.engine or "podman", *self.extra_global_args, *args]

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        if not self.binary:
            raise CannotStart(self._not_installed())
        return subprocess.run(self._cli(*args), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)  # fmt: skip

    def _not_installed(self) -> str:
        wanted = self.engine or "podman or docker"
        return (
            f"the container runner needs {wanted}, which is not installed here: install podman (Debian/Ubuntu: "
            "sudo apt-get install podman) or Docker Engine, or set runners.container.binary to its program"
        )

    # -- the protocol --------------------------------------------------------------------------------------------

    def availability(self) -> Availability:
        now = time.monotonic()
        if self._availability and now - self._availability[0] < AVAILABILITY_SECONDS:
            return self._availability[1]
        if not self.binary:
            found = Availability(False, self._not_installed())
        else:
            try:
                answer = self._run("version", "--format", "{{.Server.Version}}", timeout=15)
            except subprocess.TimeoutExpired:
                answer = None
            if answer is None:
                found = Availability(False, f"{self.engine} did not answer within 15 s ({self.binary} version)")
            elif answer.returncode != 0:
                said = (answer.stderr.strip() or answer.stdout.strip()).splitlines()[-1:] or ["no reason given"]
                daemon = " (is the docker daemon running?)" if self.engine == "docker" else ""
                found = Availability(False, f"{self.engine} does not answer{daemon}: {said[0]}")
            else:
                found = Availability(True)
        self._availability = (now, found)
        return found

    def image_availability(self, image: str) -> Availability:
        """Whether ``image`` is here to run (or will be pulled), and how to get it when it is not."""
        if not self.binary:
            return Availability(False, self._not_installed())
        if self._image_config(image) is not None or self.pull:
            return Availability(True)
        return Availability(False, self._image_missing(image))

    def capacity(self) -> int:
        return self.cores

    def submit(self, spec: RunSpec) -> Handle:
        try:
            return self._submit(spec)
        except StatusUnavailable as exc:
            raise CannotStart(str(exc)) from exc
        except subprocess.TimeoutExpired as exc:
            raise CannotStart(f"{self.engine} did not answer within {exc.timeout:.0f} s") from exc

    def _submit(self, spec: RunSpec) -> Handle:
        name = spec.run_name
        workdir = str(spec.workdir.resolve())  # a relative source of --volume would name a volume, not a folder
        handle = Handle(self.name, {"name": name, "label": name, "workdir": workdir, "engine": self.engine})
        if self._inspect([name]):  # the same job, attempt and step: the run already started
            return handle
        image = spec.image or self.image
        config = self._image_config(image)
        if config is None and self.pull:
            pulled = self._run("pull", image, timeout=3600)
            if pulled.returncode != 0:
                raise CannotStart(f"could not pull the image {image}: {_last_line(pulled)}")
            config = self._image_config(image)
        if config is None:
            raise CannotStart(self._image_missing(image))
        write_files(spec)
        for path in _run_files(spec.workdir, name).values():
            path.unlink(missing_ok=True)  # of an earlier run of this name, whose container has been removed
        started = self._run(*self.run_arguments(spec, image, config))
        if started.returncode != 0:
            if self._inspect([name]):  # started meanwhile by another submit of the same step
                return handle
            raise CannotStart(f"{self.engine} could not start the step {spec.name}: {_last_line(started)}")
        return handle

    def run_arguments(self, spec: RunSpec, image: str, config: dict[str, Any]) -> list[str]:
        """``run`` and its options for ``spec`` in ``image`` (whose configuration is ``config``): the command is the
        image's entrypoint followed by the step's argv, or by the image's own CMD when the argv is empty."""
        name = spec.run_name
        command = argv_of(spec, [self.python, "-m", "appliance"]) or list(config.get("Cmd") or [])
        command = [*(config.get("Entrypoint") or []), *command]
        if not command:
            raise CannotStart(f"the step {spec.name} gives no command and the image {image} has none")
        resources = spec.resources
        args = ["run", "--detach", "--name", name, "--init", "--pull", "missing" if self.pull else "never",
                "--label", f"{LABEL}.job={spec.job_id}", "--label", f"{LABEL}.attempt={spec.attempt}",
                "--label", f"{LABEL}.step={spec.step}", "--user", self.user, "--network", self.network,
                "--volume", f"{spec.workdir.resolve()}:{JOB_DIR}:rw", "--workdir", JOB_DIR]  # fmt: skip
        if self.engine == "podman" and os.geteuid() != 0 and not self.user_given:
            # rootless podman maps container uids to subordinate ones: keep-id makes the appliance's uid its own
            args += ["--userns", "keep-id"]
        for input_name in spec.inputs:
            source = os.path.realpath(spec.workdir / input_name)
            args += ["--volume", f"{source}:{JOB_DIR}/{input_name}:ro"]
        for key, value in {"HOME": JOB_DIR, "MPLBACKEND": "Agg", **spec.env}.items():
            args += ["--env", f"{key}={value}"]
        if resources.cores:
            args += ["--cpus", str(resources.cores)]
        if resources.memory_mb:
            args += ["--memory", f"{resources.memory_mb}m", "--memory-swap", f"{resources.memory_mb}m"]
        if resources.gpus:
            if self.engine == "docker":
                args += ["--gpus", str(resources.gpus)]
            else:
                args += ["--device", "nvidia.com/gpu=all"]
        files = {key: f"{JOB_DIR}/{path.name}" for key, path in _run_files(spec.workdir, name).items()}
        args += [*self.extra_args, "--entrypoint", "/bin/sh", image, "-c", ENTRY, "caesar-appliance-entry",
                 files["exit"], files["log"], *command]  # fmt: skip
        return args

    def status(self, handles: list[Handle]) -> list[RunStatus]:
        self._reap_signalling()
        found = self._inspect([handle.data["name"] for handle in handles])
        return [self._status(handle, found.get(handle.data["name"])) for handle in handles]

    def _status(self, handle: Handle, container: dict[str, Any] | None) -> RunStatus:
        name = handle.data["name"]
        if container is None:
            return RunStatus("lost", reason=f"{self.engine} has no container named {name}", native_state="missing")
        state = container.get("State", {})
        native = str(state.get("Status", "")).lower()
        if native in QUEUED:
            return RunStatus("queued", native_state=native)
        if native in RUNNING:
            return RunStatus("running", native_state=native)
        files = _run_files(Path(handle.data["workdir"]), name)
        exited = _read_json(files["exit"])
        code = int(exited["exit_code"]) if exited else int(state.get("ExitCode", 0))
        reason = None
        if state.get("OOMKilled") or (exited and exited.get("oom_kill") and code != 0):
            reason = OUT_OF_MEMORY
        elif code != 0 and _cancelled_before(files["cancel"], str(state.get("FinishedAt", ""))):
            reason = KILLED
        if reason and 128 < code < 160:  # the shell's way of saying "killed by signal code - 128"
            code = 128 - code
        usage = {}
        if exited and exited.get("cpu_ns") is not None:
            usage["cpu_seconds"] = round(exited["cpu_ns"] / 1e9, 3)
        if exited and exited.get("peak_bytes") is not None:
            usage["max_rss_mb"] = round(exited["peak_bytes"] / 2**20, 1)
        return RunStatus("ended", exit_code=code, reason=reason, usage=usage, native_state=native)

    def cancel(self, handle: Handle, force: bool = False) -> None:
        cancel_file = _run_files(Path(handle.data["workdir"]), handle.data["name"])["cancel"]
        try:
            cancel_file.write_text("force\n" if force else "term\n")
        except OSError:
            pass  # its folder is gone: the run is stopped all the same, and its reason is unknown
        if not self.binary:
            return
        args = ("kill", handle.data["name"]) if force else ("stop", "-t", str(int(self.grace_seconds)),
                                                            handle.data["name"])  # fmt: skip
        # not waited for: stop takes up to the grace period; the end is seen by status
        self._signalling.append(subprocess.Popen(self._cli(*args), stdin=subprocess.DEVNULL,
                                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                                 start_new_session=True))  # fmt: skip
        self._reap_signalling()

    def logs(self, handle: Handle, offset: int) -> bytes:
        log = _run_files(Path(handle.data["workdir"]), handle.data["name"])["log"]
        try:
            with log.open("rb") as file:
                file.seek(offset)
                return file.read()
        except FileNotFoundError:
            pass
        # the entry never started (no shell in the image, a bad mount): what the engine caught
        try:
            answer = subprocess.run(self._cli("logs", handle.data["name"]), capture_output=True, timeout=30)
        except (subprocess.TimeoutExpired, OSError):
            return b""
        return (answer.stdout + answer.stderr)[offset:] if answer.returncode == 0 else b""

    def release(self, handle: Handle) -> None:
        if self.binary:
            self._run("rm", "--force", handle.data["name"])
        for path in _run_files(Path(handle.data["workdir"]), handle.data["name"]).values():
            path.unlink(missing_ok=True)

    # -- helpers of the above --------------------------------------------------------------------------------------

    def _inspect(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """The containers of these names that exist, by name, in one call (missing ones are left out)."""
        if not names or not self.binary:
            return {}
        try:
            answer = self._run("container", "inspect", *names)
        except subprocess.TimeoutExpired as exc:
            raise StatusUnavailable(f"{self.engine} did not answer within {exc.timeout:.0f} s") from exc
        try:
            found = json.loads(answer.stdout or "[]")
        except json.JSONDecodeError:
            found = None
        # an answer for each name, or "no such container" for the missing ones; anything else: no answer
        problems = [line for line in answer.stderr.splitlines() if line.strip() and not _NO_SUCH.search(line)]
        if found is None or (answer.returncode != 0 and problems):
            raise StatusUnavailable(f"{self.engine} does not answer: {(problems or [_last_line(answer)])[-1]}")
        return {str(container.get("Name", "")).lstrip("/"): container for container in found or []}

    def _image_config(self, image: str) -> dict[str, Any] | None:
        answer = self._run("image", "inspect", image)
        if answer.returncode != 0:
            return None
        try:
            return json.loads(answer.stdout)[0].get("Config") or {}
        except (json.JSONDecodeError, IndexError):
            return None

    def _image_missing(self, image: str) -> str:
        how = f"{self.engine} pull {image}"
        if image.split("/")[-1].startswith("caesar-appliance-finders:"):
            how = f"./manage image --engine {self.engine} (in a checkout of caesar-appliance)"
        return f"the image {image} is not here and runners.container.pull is off: get it with `{how}`"

    def _reap_signalling(self) -> None:
        self._signalling = [process for process in self._signalling if process.poll() is None]


def _find_engine(engine: str, binary: str) -> tuple[str, str]:
    """(engine, path of its program); the path is empty when none is found."""
    if binary:
        found = shutil.which(binary) or ""
        return engine or ("docker" if "docker" in Path(binary).name else "podman"), found
    for candidate in [engine] if engine else ["podman", "docker"]:
        found = shutil.which(candidate)
        if found:
            return candidate, found
    return engine, ""


def _run_files(workdir: Path, name: str) -> dict[str, Path]:
    """The run's own files in the job folder: its log, its exit record, the mark that it was cancelled."""
    return {kind: workdir / f".{name}.{kind}" for kind in ("log", "exit", "cancel")}


def _cancelled_before(cancel_file: Path, finished_at: str) -> bool:
    """Whether the run was asked to stop before it ended (a run that failed by itself and was cancelled after was
    not killed). ``finished_at`` is the engine's RFC 3339 time, to the nanosecond."""
    try:
        asked = cancel_file.stat().st_mtime
    except FileNotFoundError:
        return False
    found = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", finished_at)
    if not found:
        return True
    seconds, fraction, zone = found.groups()
    ended = datetime.fromisoformat(seconds + ("+00:00" if zone == "Z" else zone)).timestamp()
    return asked <= ended + float(fraction or 0) + 0.01


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _last_line(answer: subprocess.CompletedProcess[str]) -> str:
    lines = (answer.stderr.strip() or answer.stdout.strip()).splitlines()
    return lines[-1] if lines else f"exit code {answer.returncode}"
