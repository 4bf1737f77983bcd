"""A runner that runs nothing, on a clock the test moves: for stepping the engine deterministically in a test's
thread, and for measuring the engine alone. Not in the entry-point group; tests and benchmarks hand it to the
engine.

What a run does is scripted per step name (``Script``); the runs live in a ``FakeBackend`` that outlives runner
objects, as a cluster outlives the appliance, so a new FakeRunner on the same backend re-attaches to them."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from runners import KILLED, Availability, Capabilities, Handle, RunSpec, RunStatus, write_files


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class Script:
    """What a run does: waits ``queued`` seconds, runs ``seconds``, then exits ``exit_code`` (with ``reason``),
    printing ``output``; ``term_ignored`` makes it outlive SIGTERM (only a forced cancel stops it); ``lost_after``
    makes it vanish from the backend after that many seconds of running; ``files`` are written into its folder when
    it ends (its products)."""

    seconds: float = 1.0
    exit_code: int = 0
    reason: str | None = None
    queued: float = 0.0
    output: str = ""
    term_ignored: bool = False
    lost_after: float | None = None
    files: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeRun:
    spec: RunSpec
    script: Script
    submitted: float
    ended: float | None = None
    exit_code: int | None = None
    reason: str | None = None
    label: str = ""


@dataclass
class FakeBackend:
    runs: dict[str, FakeRun] = field(default_factory=dict)
    status_calls: int = 0
    submitted: list[str] = field(default_factory=list)
    ids: itertools.count = field(default_factory=itertools.count)


class FakeRunner:
    name = "fake"

    def __init__(
        self,
        clock: FakeClock,
        scripts: dict[str, Script] | None = None,
        backend: FakeBackend | None = None,
        cores: int | None = 4,
        durable: bool = True,
        available: bool = True,
    ) -> None:
        self.clock = clock
        self.scripts = scripts or {}
        self.backend = backend or FakeBackend()
        self.cores = cores
        self.capabilities = Capabilities(durable=durable, containers=True, shared_filesystem=True)
        self.available = available

    def availability(self) -> Availability:
        return Availability(True) if self.available else Availability(False, "the fake backend is switched off")

    def capacity(self) -> int | None:
        return self.cores

    def submit(self, spec: RunSpec) -> Handle:
        run_id = spec.run_name
        if run_id not in self.backend.runs:  # idempotent: the same job, attempt and step is the same run
            write_files(spec)
            script = self.scripts.get(spec.name, Script())
            self.backend.runs[run_id] = FakeRun(spec, script, self.clock(), label=f"fake-{next(self.backend.ids)}")
            self.backend.submitted.append(run_id)
        return Handle(self.name, {"id": run_id, "label": self.backend.runs[run_id].label})

    def status(self, handles: list[Handle]) -> list[RunStatus]:
        self.backend.status_calls += 1
        return [self._status(handle) for handle in handles]

    def _status(self, handle: Handle) -> RunStatus:
        run = self.backend.runs.get(handle.data["id"])
        if run is None:
            return RunStatus("lost", reason="not known to the backend")
        now = self.clock()
        script = run.script
        starts = run.submitted + script.queued
        if run.ended is None and script.lost_after is not None and now >= starts + script.lost_after:
            del self.backend.runs[handle.data["id"]]
            return RunStatus("lost", reason="vanished from the backend")
        if run.ended is None and now >= starts + script.seconds:
            run.ended, run.exit_code, run.reason = starts + script.seconds, script.exit_code, script.reason
            for name, text in script.files.items():
                (run.spec.workdir / name).write_text(text)
        if run.ended is not None:
            return RunStatus("ended", run.exit_code, run.reason, {"cpu_seconds": run.ended - starts})
        return RunStatus("queued" if now < starts else "running")

    def cancel(self, handle: Handle, force: bool = False) -> None:
        run = self.backend.runs.get(handle.data["id"])
        if run is None or run.ended is not None:
            return
        if force or not run.script.term_ignored:
            run.ended, run.exit_code, run.reason = self.clock(), -9 if force else -15, KILLED

    def logs(self, handle: Handle, offset: int) -> bytes:
        run = self.backend.runs.get(handle.data["id"])
        if run is None or self.clock() < run.submitted + run.script.queued:
            return b""
        return run.script.output.encode()[offset:]

    def release(self, handle: Handle) -> None:
        self.backend.runs.pop(handle.data["id"], None)
