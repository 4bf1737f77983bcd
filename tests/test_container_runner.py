"""What the container runner does beyond the conformance suite, against the tests' podman: out of memory, a missing
image, the files a step writes belonging to the appliance's user, a run outliving the process that started it, the
container's mounts, labels and environment, one engine call per status."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runners import (
    KILLED,
    OUT_OF_MEMORY,
    CannotStart,
    Handle,
    Resources,
    RunSpec,
    StatusUnavailable,
    Tool,
    load_runner,
    runner_names,
)
from runners.container import ContainerRunner
from tests.containers import BASE_IMAGE, podman

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("container_engine")]

REPO = Path(__file__).resolve().parents[1]


def make_runner(engine: str = "podman", **settings: object) -> ContainerRunner:
    return ContainerRunner(engine=engine, image=BASE_IMAGE, **settings)


@pytest.fixture(params=["podman", "docker"])
def engine(request) -> str:
    """Both engines, for what they report differently (docker sees an OOM kill itself, podman 4.3 does not)."""
    if request.param == "docker":
        request.getfixturevalue("docker_engine")
    return request.param


def step(folder: Path, argv: list[str], step: str = "1", **extra: object) -> RunSpec:
    """A step whose job id is made from its folder's last two names (so that it is unique, also across sessions)."""
    job_id = "-".join(folder.parts[-2:])[-40:]
    return RunSpec(name="step", command=argv, workdir=folder, job_id=job_id, step=step, **extra)


def wait_until_ended(runner: ContainerRunner, handle: Handle, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        (status,) = runner.status([handle])
        if status.state in ("ended", "lost") or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def test_a_step_beyond_its_memory_ends_out_of_memory(tmp_path, engine):
    runner = make_runner(engine)
    grab = "print('allocating', flush=True); blocks = [bytearray(2**20) for _ in range(400)]"
    handle = runner.submit(step(tmp_path, ["python3", "-c", grab], resources=Resources(memory_mb=64)))
    status = wait_until_ended(runner, handle)
    assert status.state == "ended" and status.reason == OUT_OF_MEMORY and status.exit_code == -9
    assert 0 < status.usage["max_rss_mb"] <= 64
    assert runner.logs(handle, 0).startswith(b"allocating")
    runner.release(handle)


def test_a_step_within_its_memory_and_a_failing_step_end_by_themselves(tmp_path, engine):
    runner = make_runner(engine)
    fits = runner.submit(step(tmp_path, ["python3", "-c", "x = bytearray(8 * 2**20)"], "1",
                              resources=Resources(memory_mb=128)))  # fmt: skip
    fails = runner.submit(step(tmp_path, ["sh", "-c", "echo failing >&2; exit 7"], "2"))
    assert wait_until_ended(runner, fits).exit_code == 0
    status = wait_until_ended(runner, fails)
    assert status.exit_code == 7 and status.reason is None and status.usage["cpu_seconds"] >= 0
    assert runner.logs(fails, 0) == b"failing\n"


def test_a_missing_image_says_how_to_get_it_and_the_step_cannot_start(tmp_path):
    runner = make_runner()
    availability = runner.image_availability("localhost/no-such-image:1")
    assert not availability.available and "`podman pull localhost/no-such-image:1`" in availability.reason
    assert runner.image_availability(BASE_IMAGE).available
    with pytest.raises(CannotStart, match="podman pull localhost/no-such-image:1"):
        runner.submit(step(tmp_path, ["true"], image="localhost/no-such-image:1"))
    assert "./manage image" in runner.image_availability("caesar-appliance-finders:0.0.0-missing").reason


def test_the_engine_missing_or_not_answering_is_said():
    missing = ContainerRunner(binary="/nonexistent/podman")
    assert not missing.availability().available and "apt-get install podman" in missing.availability().reason
    with pytest.raises(CannotStart, match="install podman"):
        missing.submit(RunSpec(name="x", command=["true"], workdir=Path("/tmp")))
    refused = make_runner(extra_global_args=["--root", "/proc/no-such-storage"])
    assert not refused.availability().available
    assert refused.availability().reason.startswith("podman does not answer: Error: creating runtime static files")


def test_what_a_step_writes_belongs_to_the_appliances_user(tmp_path):
    folder = tmp_path / "job"
    folder.mkdir()
    os.chown(folder, 1000, 1000)
    runner = make_runner(user="1000:1000")
    handle = runner.submit(step(folder, ["sh", "-c", "id -u; id -g; echo $HOME; touch product.txt"]))
    assert wait_until_ended(runner, handle).exit_code == 0
    assert runner.logs(handle, 0).split() == [b"1000", b"1000", b"/job"]
    assert (folder / "product.txt").stat().st_uid == 1000 and (folder / "product.txt").stat().st_gid == 1000
    assert make_runner().user == f"{os.getuid()}:{os.getgid()}"  # by default: the appliance's own user


def test_a_run_outlives_the_process_that_started_it_and_is_followed_to_its_end(tmp_path, engine):
    spec = step(tmp_path, ["sh", "-c", "echo started; sleep 3; echo done; exit 5"])
    submitter = subprocess.Popen(
        [sys.executable, "-c", (
            "import json, sys, time\n"
            "from runners import RunSpec\n"
            "from runners.container import ContainerRunner\n"
            f"runner = ContainerRunner(engine={engine!r}, image={BASE_IMAGE!r})\n"
            "handle = runner.submit(RunSpec.from_json(json.loads(sys.argv[1])))\n"
            "print(json.dumps(handle.data), flush=True)\n"
            "time.sleep(600)\n"
        ), json.dumps(spec.to_json())],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    data = json.loads(submitter.stdout.readline())
    submitter.send_signal(signal.SIGKILL)
    submitter.wait()
    restarted = make_runner(engine)
    handle = Handle("container", data)
    assert restarted.status([handle])[0].state == "running"
    status = wait_until_ended(restarted, handle)
    assert status.state == "ended" and status.exit_code == 5 and status.reason is None
    assert restarted.logs(handle, 0) == b"started\ndone\n"
    restarted.release(handle)
    assert restarted.status([handle])[0].state == "lost"


def test_the_container_has_the_job_folder_read_only_inputs_labels_and_the_steps_environment(tmp_path):
    (tmp_path / "input.fits").write_text("pixels")
    runner = make_runner()
    check = (
        "echo $PWD $HOME $MPLBACKEND $JOB_OPTIONS; cat input.fits; echo; cat options.txt; echo; "
        "echo more >> input.fits || echo read-only; ls /sys/class/net"
    )
    spec = step(tmp_path, ["sh", "-c", check], inputs=("input.fits",), files={"options.txt": "--seedthr=5"},
                env={"JOB_OPTIONS": "--seedthr=5"})  # fmt: skip
    handle = runner.submit(spec)
    assert wait_until_ended(runner, handle).exit_code == 0
    lines = runner.logs(handle, 0).decode().splitlines()
    assert lines == [
        "/job /job Agg --seedthr=5",
        "pixels",
        "--seedthr=5",
        "sh: 1: cannot create input.fits: Read-only file system",
        "read-only",
        "lo",
    ]  # fmt: skip (--network none: only the loopback)
    (container,) = json.loads(podman(["container", "inspect", spec.run_name]).stdout)
    assert container["Config"]["Labels"]["caesar-appliance.job"] == spec.job_id
    assert container["Config"]["Labels"]["caesar-appliance.step"] == "1"
    assert (tmp_path / "input.fits").read_text() == "pixels"


def test_the_images_own_command_runs_when_the_step_gives_none(tmp_path):
    """caesar-rest's job images: their CMD reads what it is to do from the environment."""
    runner = make_runner()
    handle = runner.submit(step(tmp_path, [], env={"JOB_OPTIONS": "--x=1"}))  # the base image's CMD: bash
    status = wait_until_ended(runner, handle)
    assert status.exit_code == 0
    (container,) = json.loads(podman(["container", "inspect", handle.data["name"]]).stdout)
    assert container["Args"][-1] == "/bin/bash"


def test_tools_run_with_the_images_python(tmp_path):
    runner = make_runner(python="/usr/bin/python3")
    spec = step(tmp_path, Tool("BANE", ("input.fits",)))
    assert runner.run_arguments(spec, BASE_IMAGE, {})[-6:] == ["/usr/bin/python3", "-m", "appliance", "tool", "BANE",
                                                              "input.fits"]  # fmt: skip


def test_status_of_many_runs_is_one_engine_call_and_cancel_returns_at_once(tmp_path):
    runner = make_runner(grace_seconds=2)
    handles = [runner.submit(step(tmp_path, ["sleep", "600"], str(n))) for n in range(3)]
    calls = []
    run = runner._run
    runner._run = lambda *args, **kwargs: calls.append(args) or run(*args, **kwargs)
    statuses = runner.status(handles)
    assert [s.state for s in statuses] == ["running"] * 3 and len(calls) == 1
    begun = time.monotonic()
    for handle in handles:
        runner.cancel(handle)
    assert time.monotonic() - begun < 1
    for handle in handles:
        status = wait_until_ended(runner, handle, timeout=20)
        assert status.reason == KILLED and status.exit_code == -15  # sleep dies of the SIGTERM passed on to it


def test_a_run_that_failed_before_it_was_cancelled_is_not_said_to_be_killed(tmp_path):
    runner = make_runner()
    handle = runner.submit(step(tmp_path, ["sh", "-c", "exit 3"]))
    assert wait_until_ended(runner, handle).exit_code == 3
    time.sleep(0.05)
    runner.cancel(handle)
    status = wait_until_ended(runner, handle)
    assert status.exit_code == 3 and status.reason is None


def test_an_input_linked_from_elsewhere_is_seen_through_its_link(tmp_path):
    """A prepared input may be a link into the appliance's file store, outside the job folder."""
    store, folder = tmp_path / "store", tmp_path / "job"
    store.mkdir()
    folder.mkdir()
    (store / "0f3c.fits").write_text("pixels")
    (folder / "input.fits").symlink_to(store / "0f3c.fits")
    runner = make_runner()
    handle = runner.submit(step(folder, ["cat", "input.fits"], inputs=("input.fits",)))
    assert wait_until_ended(runner, handle).exit_code == 0 and runner.logs(handle, 0) == b"pixels"


def test_gpus_extra_options_and_a_docker_daemon_that_does_not_answer(tmp_path, monkeypatch):
    spec = step(tmp_path, ["nvidia-smi"], resources=Resources(cores=2, memory_mb=512, gpus=1))
    podman_args = make_runner(extra_args=["--shm-size", "1g"], gpus=True).run_arguments(spec, BASE_IMAGE, {})
    assert "--device nvidia.com/gpu=all" in " ".join(podman_args) and "--shm-size 1g" in " ".join(podman_args)
    assert "--cpus 2 --memory 512m --memory-swap 512m" in " ".join(podman_args)
    docker = make_runner("docker", gpus=True)
    assert docker.capabilities.gpus and "--gpus 1" in " ".join(docker.run_arguments(spec, BASE_IMAGE, {}))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-daemon.sock")
    reason = make_runner("docker").availability().reason
    assert reason.startswith("docker does not answer (is the docker daemon running?): ") and "no-daemon.sock" in reason


def test_runs_are_not_lost_when_the_engine_does_not_answer(tmp_path):
    runner = make_runner()
    handle = runner.submit(step(tmp_path, ["sleep", "600"]))
    unanswered = make_runner(extra_global_args=["--root", "/proc/no-such-storage"])
    with pytest.raises(StatusUnavailable, match="podman does not answer"):
        unanswered.status([handle])
    with pytest.raises(CannotStart, match="podman does not answer"):
        unanswered.submit(step(tmp_path, ["true"], step="2"))
    assert runner.status([handle])[0].state == "running"
    runner.cancel(handle, force=True)


def test_the_runner_is_found_through_the_entry_point_group():
    runner = load_runner("container", engine="podman", cores=3, grace_seconds=2)
    assert isinstance(runner, ContainerRunner) and runner.capacity() == 3 and "container" in runner_names()
    assert runner.capabilities.to_json() == {"durable": True, "containers": True, "shared_filesystem": True,
                                             "gpus": False, "walltime": False}  # fmt: skip


def test_with_pull_a_missing_image_is_pulled_before_its_first_run(tmp_path):
    """No registry is reachable here: the pull fails, and says so."""
    runner = make_runner(pull=True)
    assert runner.image_availability("localhost/no-such-image:1").available
    begun = time.monotonic()
    with pytest.raises(CannotStart, match="could not pull the image localhost/no-such-image:1: "):
        runner.submit(step(tmp_path, ["true"], image="localhost/no-such-image:1"))
    assert time.monotonic() - begun < 30
    handle = runner.submit(step(tmp_path, ["true"]))  # an image that is here is not pulled
    assert wait_until_ended(runner, handle).exit_code == 0
