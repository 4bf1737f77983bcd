"""Where finder commands run. The whole runner protocol is in this module; every runner, built-in or third-party,
is found through the entry-point group ``caesar_appliance.runners``."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

ENTRY_POINT_GROUP = "caesar_appliance.runners"


@dataclass(frozen=True)
class RunSpec:
    """One command of a job. ``argv`` is a list, never a shell string."""

    name: str  # what the step runs, for people: "BANE", "aegean", "pybdsf"
    argv: list[str]
    cwd: Path
    log: Path  # stdout and stderr are appended here
    cores: int = 1
    env: dict[str, str] = field(default_factory=dict)  # added to the appliance's own environment
    memory_mb: int | None = None
    image: str | None = None  # container image, for runners that use one


@dataclass(frozen=True)
class Handle:
    """What a runner needs to find its run again, also after a restart of the appliance. JSON-serialisable."""

    runner: str
    data: dict[str, Any]

    @property
    def label(self) -> str:
        """Shown to users as the job's ``pid``: a process id, a Slurm job id, a pod name."""
        return str(self.data.get("label", ""))


class Runner(Protocol):
    name: str

    def submit(self, spec: RunSpec) -> Handle:
        """Start the command; return at once."""

    def poll(self, handle: Handle) -> int | None:
        """None while it runs; then its exit code (negative: killed by that signal)."""

    def cancel(self, handle: Handle) -> None:
        """Ask it to stop (SIGTERM or equivalent); the caller escalates to ``kill`` after a grace period."""

    def kill(self, handle: Handle) -> None:
        """Stop it now."""

    def resources(self, handle: Handle) -> dict[str, float]:
        """What an ended run used, as far as the runner knows: ``cpu_seconds``, ``max_rss_mb``; {} if unknown."""

    def reap_orphan(self, handle: Handle) -> bool:
        """After a crash of the appliance: stop the run if it is still the same one. True if something was stopped."""


def load_runner(name: str, **options: Any) -> Runner:
    found = entry_points(group=ENTRY_POINT_GROUP, name=name)
    if not found:
        known = ", ".join(sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)))
        raise LookupError(f"no runner named {name!r} (installed: {known})")
    return next(iter(found)).load()(**options)
