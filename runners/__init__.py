"""Where the steps of jobs run. The whole runner protocol is in this module; every runner, built-in or third-party,
is found through the entry-point group ``caesar_appliance.runners`` and made with its ``[runners.<name>]`` settings
as keyword arguments.

A runner is asked to start a step and answers at once with a handle; the engine then asks it, once per tick and for
all of its active handles in one call, how they are. Nothing waits on a run. A runner whose runs outlive the
appliance (``durable``: a container, a Slurm job) is given its handles again after a restart and follows them to
their end; the runs of one that is not are stopped and run again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal, Protocol

ENTRY_POINT_GROUP = "caesar_appliance.runners"

# Why a run ended other than by its own choice, as RunStatus.reason says it
OUT_OF_MEMORY = "out of memory"
KILLED = "killed"
NODE_FAILURE = "node failure"
TIMED_OUT = "timed out"
LOST = "lost"

RunState = Literal["queued", "running", "ended", "lost"]


@dataclass(frozen=True)
class Tool:
    """Run this appliance's console script or Python module ``name`` (BANE, appliance.apps.sep_run) with ``args``:
    each runner maps it to its own interpreter, here or in an image."""

    name: str
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Resources:
    cores: int = 1
    memory_mb: int | None = None  # the run is stopped (OUT_OF_MEMORY) beyond it, where the runner can enforce it
    walltime_seconds: float | None = None  # for runners with their own limit (a cluster's); the engine keeps its own
    gpus: int = 0
    tasks: int = 1  # MPI processes, each with cores // tasks threads (caesar's nproc); cores counts them all


@dataclass(frozen=True)
class RunSpec:
    """One step of a job. The command is an argv list (never a shell string) or a Tool; it runs in ``workdir`` with
    the files of ``files`` (name -> text) written there first, and reads the files named in ``inputs`` (already in
    ``workdir``, such as the prepared image). Everything it prints belongs to the step's log."""

    name: str  # what the step runs, for people: "BANE", "aegean", "pybdsf"
    command: list[str] | Tool
    workdir: Path
    job_id: str = ""
    step: str = "1"  # unique within the job and attempt: a run's deterministic name is made from job, attempt, step
    attempt: int = 1
    files: dict[str, str] = field(default_factory=dict)
    inputs: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)  # added to the runner's environment for the command
    resources: Resources = Resources()
    image: str | None = None  # container image, for runners that use one
    # the job's steps after this one, for runners that start them all as one backend job (a Slurm batch job) on the
    # first submit and answer the later submits with it; the others ignore it
    following: tuple[RunSpec, ...] = ()

    @property
    def run_name(self) -> str:
        """The name a runner gives the run where it can name it (a container, a Slurm job), for finding it again."""
        return f"caesar-appliance-{self.job_id}-{self.attempt}-{self.step}"

    def to_json(self) -> dict[str, Any]:
        command = {"tool": self.command.name, "args": list(self.command.args)} if isinstance(self.command, Tool) else {
            "argv": list(self.command)
        }  # fmt: skip
        return {
            "name": self.name, "command": command, "workdir": str(self.workdir), "job_id": self.job_id,
            "step": self.step, "attempt": self.attempt, "files": self.files, "inputs": list(self.inputs),
            "env": self.env, "resources": vars(self.resources), "image": self.image,
            "following": [spec.to_json() for spec in self.following],
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunSpec:
        command = data["command"]
        return cls(
            name=data["name"],
            command=Tool(command["tool"], tuple(command["args"])) if "tool" in command else list(command["argv"]),
            workdir=Path(data["workdir"]),
            job_id=data["job_id"],
            step=data["step"],
            attempt=data["attempt"],
            files=dict(data["files"]),
            inputs=tuple(data["inputs"]),
            env=dict(data["env"]),
            resources=Resources(**data["resources"]),
            image=data["image"],
            following=tuple(cls.from_json(spec) for spec in data.get("following", ())),
        )


@dataclass(frozen=True)
class Handle:
    """What a runner needs to find its run again, also after a restart of the appliance. JSON-serialisable."""

    runner: str
    data: dict[str, Any]

    @property
    def label(self) -> str:
        """Shown to users as the job's ``pid``: a process id, a container name, a Slurm job id."""
        return str(self.data.get("label", ""))


@dataclass(frozen=True)
class RunStatus:
    state: RunState
    exit_code: int | None = None  # once ended: the command's exit code (negative: killed by that signal)
    reason: str | None = None  # why it ended when not by itself (OUT_OF_MEMORY, KILLED, ...), or why it is lost
    usage: dict[str, float] = field(default_factory=dict)  # cpu_seconds, max_rss_mb, as far as the runner knows
    native_state: str | None = None  # the backend's own word for it (a Slurm state), for the log
    note: str | None = None  # what the backend says of it now, for people ("Slurm: Resources" for a queued job)


@dataclass(frozen=True)
class Capabilities:
    durable: bool = False  # its runs go on while the appliance is stopped, and are found again after
    containers: bool = False  # it runs steps in images (RunSpec.image)
    shared_filesystem: bool = True  # the run sees the job folder of this machine
    gpus: bool = False
    # it stops runs at their wall time itself (a cluster's time limit), counted from when they run: the engine's
    # own deadline starts when the first step runs, not when the job is claimed (a cluster's queue may be long)
    walltime: bool = False

    def to_json(self) -> dict[str, bool]:
        return vars(self).copy()


@dataclass(frozen=True)
class Availability:
    available: bool
    reason: str | None = None


class CannotStart(Exception):
    """Raised by ``submit`` when the step cannot be started at all (its image is not there, the engine refuses it):
    the step fails with ``reason``, which says what to do about it; submitting it again fails the same way until
    that is done."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StatusUnavailable(Exception):
    """Raised by ``status`` when the backend cannot be asked now (its daemon or cluster does not answer): the runs
    are as they were, not lost; ask again at the next tick."""


class Runner(Protocol):
    name: str
    capabilities: Capabilities

    def availability(self) -> Availability:
        """Whether it can run steps now (its engine, its cluster is there), and why not. Cheap: asked per listing."""

    def capacity(self) -> int | None:
        """Cores its steps may hold at once; None when the backend queues by itself (a cluster)."""

    def submit(self, spec: RunSpec) -> Handle:
        """Start the step and return at once. Submitting the same job, attempt and step again returns the handle
        of the run already started, where the backend can tell. Raises CannotStart when it cannot be started."""

    def status(self, handles: list[Handle]) -> list[RunStatus]:
        """How each run is, in the order given, in one call (one ``ps``, one ``squeue``) whatever their number.
        Raises StatusUnavailable when the backend does not answer (a run is "lost" only when the backend says it
        has no such run)."""

    def cancel(self, handle: Handle, force: bool = False) -> None:
        """Ask the run to stop (SIGTERM or the backend's equivalent), or stop it now with ``force``. Returns at once;
        the run's end is seen by ``status``. Also for runs of an earlier appliance process."""

    def logs(self, handle: Handle, offset: int) -> bytes:
        """What the run has printed from byte ``offset`` on (stdout and stderr together)."""

    def release(self, handle: Handle) -> None:
        """The engine has what it needs of an ended run (status, logs): forget it and free what it holds."""


def argv_of(spec: RunSpec, appliance: list[str]) -> list[str]:
    """The argv of a step, ``appliance`` being how this runner starts the appliance's command line
    (``[sys.executable, "-m", "appliance"]`` here, ``["python3", "-m", "appliance"]`` in an image): a Tool becomes
    ``... tool NAME ARGS``."""
    if isinstance(spec.command, Tool):
        return [*appliance, "tool", spec.command.name, *spec.command.args]
    return list(spec.command)


def write_files(spec: RunSpec) -> None:
    """Write the files a step needs into its folder, for runners that see the folder (each one whole or not at
    all: a partial file is never left under its name)."""
    for name, text in spec.files.items():
        if "/" in name or name.startswith("."):
            raise ValueError(f"a step's file must be a plain name, not {name!r}")
        path = spec.workdir / name
        partial = path.with_name(f".{name}.part")
        partial.write_text(text)
        os.replace(partial, path)


def runner_names() -> list[str]:
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def load_runner(name: str, **options: Any) -> Runner:
    found = entry_points(group=ENTRY_POINT_GROUP, name=name)
    if not found:
        raise LookupError(f"no runner named {name!r} (installed: {', '.join(runner_names())})")
    return next(iter(found)).load()(**options)
