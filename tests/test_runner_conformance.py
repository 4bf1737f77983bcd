"""What every runner must do, checked the same way for each: submit and status, exit codes, logs, cancel and the
forced stop the engine escalates to at a wall-time limit, a lost run, resources, and re-attaching to runs from a
new runner object (what a restarted appliance holds).

Each runner comes with a harness that makes it, says how its steps start Python, and waits for it: the fake
runner's clock is moved, real runners are waited for. A new runner adds a harness to HARNESSES."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runners import Handle, Resources, RunSpec, RunStatus
from runners.container import ContainerRunner
from runners.fake import FakeBackend, FakeClock, FakeRunner, Script
from runners.local import LocalRunner
from runners.slurm import SlurmRunner
from tests.containers import BASE_IMAGE

PRINT_AND_EXIT = "import sys; print('hello from the step', flush=True); sys.exit(3)"
SLEEP = "import time; print('sleeping', flush=True); time.sleep(600)"
IGNORE_TERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ignoring', flush=True); time.sleep(600)"
)
WRITE_FILE = "import pathlib; pathlib.Path('out.txt').write_text(pathlib.Path('in.txt').read_text().upper())"


class Harness:
    """A runner under test: ``make`` gives a runner (a second call: the same backend seen by a new object), ``python``
    the argv that starts Python in its steps, ``wait`` waits until the statuses satisfy ``done``."""

    name: str
    durable: bool
    needed: object = None  # what the fixture of NEEDS gave

    def make(self) -> object:
        raise NotImplementedError

    python: list[str]

    def spec(self, tmp_path: Path, name: str, code: str, step: str = "1", **extra: object) -> RunSpec:
        return RunSpec(name=name, command=[*self.python, "-c", code], workdir=tmp_path, job_id=tmp_path.name[-20:],
                       step=step, **extra)  # fmt: skip

    def wait(self, runner, handles: list[Handle], done: Callable[[list[RunStatus]], bool], timeout: float = 60):
        deadline = time.monotonic() + timeout
        while True:
            statuses = runner.status(handles)
            if done(statuses) or time.monotonic() > deadline:
                return statuses
            time.sleep(0.05)

    def close(self) -> None:
        pass


class LocalHarness(Harness):
    name = "local"
    durable = False
    python = [sys.executable]

    def make(self) -> LocalRunner:
        return LocalRunner(cores=2)


class FakeHarness(Harness):
    """The fake runner plays the scripts that match the Python the others run."""

    name = "fake"
    durable = True
    python = ["python3"]
    scripts = {
        "print-and-exit": Script(seconds=2, exit_code=3, output="hello from the step\n"),
        "sleep": Script(seconds=600, output="sleeping\n"),
        "ignore-term": Script(seconds=600, output="ignoring\n", term_ignored=True),
        "write-file": Script(seconds=1, files={"out.txt": "UPPER"}),
    }

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.backend = FakeBackend()

    def make(self) -> FakeRunner:
        return FakeRunner(self.clock, self.scripts, self.backend)

    def wait(self, runner, handles, done, timeout=60):
        for _ in range(int(timeout)):
            statuses = runner.status(handles)
            if done(statuses):
                return statuses
            self.clock.advance(1)
        return runner.status(handles)


class ContainerHarness(Harness):
    """podman, started by the tests (the ``container_engine`` fixture), running the Debian base image."""

    name = "container"
    durable = True
    python = ["python3"]

    def make(self) -> ContainerRunner:
        return ContainerRunner(engine="podman", cores=2, image=BASE_IMAGE)

    def spec(self, tmp_path: Path, name: str, code: str, step: str = "1", **extra: object) -> RunSpec:
        return super().spec(tmp_path, name, code, step, image=BASE_IMAGE, **extra)


class DockerHarness(ContainerHarness):
    """The same runner on Debian's dockerd, started by the tests (the ``docker_engine`` fixture)."""

    name = "docker"

    def make(self) -> ContainerRunner:
        return ContainerRunner(engine="docker", cores=2, image=BASE_IMAGE)


class SlurmHarness(Harness):
    """The Slurm runner through Slurm's commands, on the tests' loopback cluster (the ``slurm_cluster`` fixture)."""

    name = "slurm"
    durable = True
    python = [sys.executable]

    def make(self) -> SlurmRunner:
        return SlurmRunner(poll_seconds=0)


class SlurmRestHarness(Harness):
    """The same runner through slurmrestd (v0.0.38, JWT). Its jobs run as slurmrestd's unprivileged user: in a
    folder that user can write, with the system's Python (the test's virtual environment may not be readable), and
    files that user can read whatever the tests' umask (the runner writes them as the tests' user)."""

    name = "slurm-rest"
    durable = True
    python = ["/usr/bin/python3"]
    umask: int | None = None

    def make(self) -> SlurmRunner:
        if self.umask is None:
            self.umask = os.umask(0o022)
        cluster = self.needed
        token = cluster.dir / "rest-token"
        if not token.exists():
            token.write_text(cluster.token(lifespan=7200))
        return SlurmRunner(transport="rest", rest_url=cluster.rest_url, token_file=str(token), user=cluster.rest_user,
                           poll_seconds=0)  # fmt: skip

    def spec(self, tmp_path: Path, name: str, code: str, step: str = "1", **extra: object) -> RunSpec:
        return super().spec(self.needed.shared_dir(f"conformance-{tmp_path.name}"), name, code, step, **extra)

    def close(self) -> None:
        super().close()
        if self.umask is not None:
            os.umask(self.umask)


HARNESSES: dict[str, Callable[[], Harness]] = {"local": LocalHarness, "fake": FakeHarness,
                                               "container": ContainerHarness, "docker": DockerHarness,
                                               "slurm": SlurmHarness, "slurm-rest": SlurmRestHarness}  # fmt: skip
# a fixture a harness needs before it can make its runner
NEEDS = {"container": "container_engine", "docker": "docker_engine", "slurm": "slurm_cluster",
         "slurm-rest": "slurm_cluster"}  # fmt: skip


@pytest.fixture(params=[pytest.param(name, marks=[pytest.mark.e2e] if name in NEEDS else []) for name in
                        sorted(HARNESSES)])  # fmt: skip
def harness(request) -> Iterator[Harness]:
    made = HARNESSES[request.param]()
    if request.param in NEEDS:
        made.needed = request.getfixturevalue(NEEDS[request.param])
    yield made
    made.close()


def ended(statuses: list[RunStatus]) -> bool:
    return all(s.state in ("ended", "lost") for s in statuses)


def running(statuses: list[RunStatus]) -> bool:
    return all(s.state == "running" for s in statuses)


def started(runner, handle: Handle) -> bool:
    """The step has printed its first line: it runs, and has set up what it meant to (a signal handler)."""
    return bool(runner.logs(handle, 0))


def test_submit_returns_at_once_and_status_gives_exit_code_and_logs(harness, tmp_path):
    runner = harness.make()
    begun = time.monotonic()
    handle = runner.submit(harness.spec(tmp_path, "print-and-exit", PRINT_AND_EXIT))
    assert time.monotonic() - begun < 5
    assert handle.runner == runner.name and handle.label
    assert runner.status([handle])[0].state in ("queued", "running", "ended")
    (status,) = harness.wait(runner, [handle], ended)
    assert status.state == "ended" and status.exit_code == 3 and status.reason is None
    output = runner.logs(handle, 0)
    assert output.strip().endswith(b"hello from the step")
    assert runner.logs(handle, len(output)) == b""
    assert runner.logs(handle, 6) == output[6:]
    runner.release(handle)


def test_status_answers_for_many_runs_in_one_call_in_order(harness, tmp_path):
    runner = harness.make()
    sleeper = runner.submit(harness.spec(tmp_path, "sleep", SLEEP, step="1"))
    quick = runner.submit(harness.spec(tmp_path, "print-and-exit", PRINT_AND_EXIT, step="2"))
    statuses = harness.wait(runner, [sleeper, quick], lambda s: s[1].state == "ended")
    assert statuses[0].state == "running" and statuses[1].exit_code == 3
    runner.cancel(sleeper, force=True)
    assert harness.wait(runner, [sleeper], ended)[0].state == "ended"


def test_the_files_a_step_needs_are_written_before_it_runs_and_its_products_stay(harness, tmp_path):
    runner = harness.make()
    spec = harness.spec(tmp_path, "write-file", WRITE_FILE, files={"in.txt": "upper"}, inputs=("in.txt",))
    handle = runner.submit(spec)
    (status,) = harness.wait(runner, [handle], ended)
    assert status.exit_code == 0
    assert (spec.workdir / "in.txt").read_text() == "upper" and (spec.workdir / "out.txt").read_text() == "UPPER"


def test_cancel_stops_a_run_and_returns_at_once(harness, tmp_path):
    runner = harness.make()
    handle = runner.submit(harness.spec(tmp_path, "sleep", SLEEP))
    harness.wait(runner, [handle], lambda s: running(s) and started(runner, handle))
    begun = time.monotonic()
    runner.cancel(handle)
    assert time.monotonic() - begun < 2
    (status,) = harness.wait(runner, [handle], ended, timeout=30)
    assert status.state == "ended" and status.exit_code != 0


def test_a_run_that_ignores_term_is_stopped_by_force(harness, tmp_path):
    """What the engine does at a wall-time limit or after a cancel's grace period."""
    runner = harness.make()
    handle = runner.submit(harness.spec(tmp_path, "ignore-term", IGNORE_TERM))
    harness.wait(runner, [handle], lambda s: running(s) and started(runner, handle))
    runner.cancel(handle)
    assert harness.wait(runner, [handle], ended, timeout=3)[0].state == "running"
    runner.cancel(handle, force=True)
    (status,) = harness.wait(runner, [handle], ended, timeout=30)
    assert status.state == "ended" and status.exit_code != 0


def test_a_run_the_backend_does_not_know_is_lost(harness, tmp_path):
    runner = harness.make()
    real = runner.submit(harness.spec(tmp_path, "print-and-exit", PRINT_AND_EXIT))
    harness.wait(runner, [real], ended)
    runner.release(real)
    forged = Handle(runner.name, {**real.data, "pid": 2**22 + 7, "id": "no-such-run", "name": "no-such-run"})
    (status,) = runner.status([forged])
    assert status.state == "lost" and status.reason


def test_a_new_runner_object_finds_the_runs_of_the_old_one(harness, tmp_path):
    """After a restart: a durable runner follows the run to its end; one that is not sees it running and can stop
    it (the engine then runs the step again)."""
    first = harness.make()
    spec = harness.spec(tmp_path, "sleep", SLEEP)
    handle = first.submit(spec)
    harness.wait(first, [handle], lambda s: running(s) and started(first, handle))
    second = harness.make()
    assert second.capabilities.durable is harness.durable
    assert second.status([handle])[0].state == "running"
    assert second.logs(handle, 0).startswith(b"sleeping")
    if harness.durable:
        assert second.submit(spec).label == handle.label  # the same step again: the same run
    second.cancel(handle, force=True)
    (status,) = harness.wait(second, [handle], ended, timeout=30)
    assert status.state in ("ended", "lost")
    if harness.durable:
        assert status.state == "ended" and status.exit_code != 0


def test_resources_and_capabilities_are_declared(harness, tmp_path):
    runner = harness.make()
    assert runner.availability().available
    capacity = runner.capacity()
    assert capacity is None or capacity >= 1
    handle = runner.submit(harness.spec(tmp_path, "print-and-exit", PRINT_AND_EXIT, resources=Resources(cores=1)))
    (status,) = harness.wait(runner, [handle], ended)
    assert all(value >= 0 for value in status.usage.values())
