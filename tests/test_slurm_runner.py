"""The Slurm runner without a cluster: its batch script, run here by /bin/sh as a node would run it (quoting, steps in
order, exit codes, signals), the commands it makes for each environment, and how it reads the cluster's states.
Against a real Slurm: tests/test_slurm_jobs.py and the runner conformance suite."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runners import KILLED, NODE_FAILURE, OUT_OF_MEMORY, TIMED_OUT, Resources, RunSpec, RunStatus, Tool
from runners.slurm import SlurmJob, SlurmRunner, Submission

EVIL = ["a; touch injected", "$(touch injected)", "`touch injected`", 'it\'s "quoted"', "two\nlines", "$HOME", "*"]


class Recorder:
    """A transport that keeps what it is given and answers what the test says the cluster knows."""

    def __init__(self) -> None:
        self.submitted: list[Submission] = []
        self.known: dict[str, SlurmJob] = {}
        self.cancelled: list[tuple[str, bool]] = []

    def ping(self) -> None:
        pass

    def submit(self, job: Submission) -> str:
        self.submitted.append(job)
        return str(100 + len(self.submitted))

    def jobs(self, ids: list[str]) -> dict[str, SlurmJob]:
        return {id: self.known[id] for id in ids if id in self.known}

    def cancel(self, id: str, force: bool) -> None:
        self.cancelled.append((id, force))


def runner(**settings: object) -> tuple[SlurmRunner, Recorder]:
    made = SlurmRunner(**settings)
    made.transport = Recorder()
    return made, made.transport


def spec(workdir: Path, step: str, code: str, *args: str, **extra: object) -> RunSpec:
    return RunSpec(name=f"step{step}", command=[sys.executable, "-c", code, *args], workdir=workdir, job_id="j1",
                   step=step, **extra)  # fmt: skip


def run_script(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    path = cwd / "batch.sh"
    path.write_text(script)
    return subprocess.run(["/bin/sh", str(path)], cwd=cwd, capture_output=True, text=True, timeout=60)


def exit_record(workdir: Path, step: str) -> dict:
    return json.loads((workdir / f".caesar-appliance-j1-1-{step}.exit").read_text())


def test_no_option_value_can_break_out_of_the_batch_script(tmp_path):
    slurm, _ = runner()
    printing = "import json, sys; print(json.dumps(sys.argv[1:]))"
    script = slurm.batch_script([spec(tmp_path, "1", printing, *EVIL, env={"TITLE": "x; touch injected $(id)"})])
    assert run_script(script, tmp_path).returncode == 0
    log = (tmp_path / ".caesar-appliance-j1-1-1.log").read_text()
    assert json.loads(log) == EVIL
    assert not list(tmp_path.glob("injected*"))


def test_the_steps_run_in_order_with_their_threads_and_the_first_failure_stops_the_job(tmp_path):
    slurm, _ = runner()
    threads = "import os, pathlib; pathlib.Path('threads').write_text(os.environ['OMP_NUM_THREADS'])"
    specs = [spec(tmp_path, "1", threads, resources=Resources(cores=3)), spec(tmp_path, "2", "raise SystemExit(3)"),
             spec(tmp_path, "3", "open('third', 'w')")]  # fmt: skip
    answer = run_script(slurm.batch_script(specs), tmp_path)
    assert answer.returncode == 3
    assert (tmp_path / "threads").read_text() == "3"
    assert exit_record(tmp_path, "1")["exit_code"] == 0 and exit_record(tmp_path, "2")["exit_code"] == 3
    assert not (tmp_path / "third").exists() and not (tmp_path / ".caesar-appliance-j1-1-3.exit").exists()


def test_a_requeued_job_skips_the_steps_that_succeeded(tmp_path):
    slurm, _ = runner()
    counting = "import pathlib; p = pathlib.Path('runs'); p.write_text(p.read_text() + 'x' if p.exists() else 'x')"
    specs = [spec(tmp_path, "1", counting), spec(tmp_path, "2", "open('second', 'a').write('y')")]
    script = slurm.batch_script(specs)
    assert run_script(script, tmp_path).returncode == 0
    assert run_script(script, tmp_path).returncode == 0
    assert (tmp_path / "runs").read_text() == "x" and (tmp_path / "second").read_text() == "y"


def test_sigterm_to_the_batch_script_reaches_the_step_and_its_code_is_recorded(tmp_path):
    slurm, _ = runner()
    waiting = "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *_: sys.exit(42))\nprint('up', " \
              "flush=True)\ntime.sleep(60)"  # fmt: skip
    (tmp_path / "batch.sh").write_text(slurm.batch_script([spec(tmp_path, "1", waiting)]))
    shell = subprocess.Popen(["/bin/sh", str(tmp_path / "batch.sh")], cwd=tmp_path)
    log = tmp_path / ".caesar-appliance-j1-1-1.log"
    deadline = time.monotonic() + 20
    while not (log.exists() and log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    shell.send_signal(signal.SIGTERM)
    assert shell.wait(20) == 42
    assert exit_record(tmp_path, "1")["exit_code"] == 42


def test_paths_are_given_to_the_cluster_through_the_path_map(tmp_path):
    here = tmp_path / "home" / "jobs"
    here.mkdir(parents=True)
    slurm, cluster = runner(path_map={str(tmp_path / "home"): "/nfs/lab"}, python="/nfs/venv/bin/python")
    slurm.submit(RunSpec(name="BANE", command=Tool("BANE", (str(here / "input.fits"), "--cores", "2")), workdir=here,
                         job_id="j1", resources=Resources(cores=2, walltime_seconds=61)))  # fmt: skip
    (job,) = cluster.submitted
    assert job.workdir == "/nfs/lab/jobs" and job.output.startswith("/nfs/lab/jobs/")
    assert job.time_minutes == 2 and job.cpus_per_task == 2 and job.name == "j1"
    assert "cd /nfs/lab/jobs" in job.script
    assert "/nfs/venv/bin/python -m appliance tool BANE /nfs/lab/jobs/input.fits --cores 2" in job.script
    assert str(tmp_path) not in job.script


def test_mpi_tasks_share_the_cores_and_memory_and_placement_come_from_settings(tmp_path):
    slurm, cluster = runner(partition="long", account="radio", qos="normal", memory_mb=4000)
    slurm.submit(spec(tmp_path, "1", "pass", resources=Resources(cores=8, tasks=4)))
    (job,) = cluster.submitted
    assert (job.tasks, job.cpus_per_task, job.memory_mb) == (4, 2, 4000)
    assert (job.partition, job.account, job.qos) == ("long", "radio", "normal")


def test_later_steps_of_a_job_join_its_slurm_job(tmp_path):
    slurm, cluster = runner()
    second = spec(tmp_path, "2", "pass")
    first = slurm.submit(replace_following(spec(tmp_path, "1", "pass"), second))
    assert slurm.submit(second).data["id"] == first.data["id"]
    assert slurm.submit(spec(tmp_path, "1", "pass")).label == first.label  # submitted again: the same job
    assert len(cluster.submitted) == 1 and cluster.submitted[0].script.count("run_step ") == 2


def replace_following(first: RunSpec, *following: RunSpec) -> RunSpec:
    from dataclasses import replace

    return replace(first, following=following)


def test_the_image_runs_through_podman_or_apptainer_with_the_job_folder_at_job(tmp_path):
    (tmp_path / "input.fits").write_text("")
    step = RunSpec(name="aegean", command=Tool("aegean", ("input.fits",)), workdir=tmp_path, job_id="j1",
                   inputs=("input.fits",), image="caesar-appliance-finders:1", env={"OMP_NUM_THREADS": "2"})  # fmt: skip
    podman, _ = runner(environment="podman")
    argv = podman.step_command(step)
    assert argv[:3] == ["podman", "run", "--rm"] and f"{tmp_path}:/job:rw" in argv
    assert argv[argv.index("caesar-appliance-finders:1") :] == [
        "caesar-appliance-finders:1",
        "python3",
        "-m",
        "appliance",
        "tool",
        "aegean",
        "input.fits",
    ]
    apptainer, _ = runner(environment="apptainer", image="/nfs/images/finders.sif")
    argv = apptainer.step_command(step)
    assert argv[:3] == ["apptainer", "exec", "--containall"] and f"{tmp_path}:/job:rw" in argv
    assert "/nfs/images/finders.sif" in argv and "OMP_NUM_THREADS=2" in argv
    assert apptainer.capabilities.containers and not runner()[0].capabilities.containers


def written(workdir: Path, step: str, code: int) -> None:
    (workdir / f".caesar-appliance-j1-1-{step}.exit").write_text(json.dumps({"exit_code": code, "seconds": 1}))


@pytest.mark.parametrize(
    ("state", "code", "reason", "exit_code"),
    [("COMPLETED", 0, None, 0), ("FAILED", 3, None, 3), ("TIMEOUT", 143, TIMED_OUT, -15),
     ("OUT_OF_MEMORY", 137, OUT_OF_MEMORY, -9), ("CANCELLED", 143, KILLED, -15)],
)  # fmt: skip
def test_success_is_read_from_the_exit_file_and_the_state_says_why_it_failed(tmp_path, state, code, reason, exit_code):
    slurm, cluster = runner()
    handle = slurm.submit(spec(tmp_path, "1", "pass"))
    cluster.known["101"] = SlurmJob("101", "RUNNING")
    assert slurm.status([handle])[0].state == "running"
    written(tmp_path, "1", code)
    if code:  # a failure waits for the cluster to say why
        assert slurm.status([handle])[0].state == "running"
    cluster.known["101"] = SlurmJob("101", state, exit_code=code % 128, signal=None)
    (status,) = slurm.status([handle])
    assert (status.state, status.exit_code, status.reason, status.native_state) == ("ended", exit_code, reason, state)


def test_a_step_that_left_no_exit_code_ends_as_slurm_says(tmp_path):
    slurm, cluster = runner()
    handle = slurm.submit(spec(tmp_path, "1", "pass"))
    cluster.known["101"] = SlurmJob("101", "PENDING", reason="Resources")
    assert slurm.status([handle])[0].note == "Slurm: Resources"
    cluster.known["101"] = SlurmJob("101", "NODE_FAIL", exit_code=0, signal=9)
    assert slurm.status([handle])[0] == RunStatus("ended", exit_code=-9, reason=NODE_FAILURE, native_state="NODE_FAIL")
    cluster.known["101"] = SlurmJob("101", "PREEMPTED", exit_code=0)
    assert slurm.status([handle])[0].reason == "preempted"
    cluster.known["101"] = SlurmJob("101", "REQUEUED")
    assert slurm.status([handle])[0].state == "queued"


def test_a_job_the_cluster_forgot_is_judged_by_its_exit_file_else_lost(tmp_path):
    slurm, _ = runner()
    handle = slurm.submit(spec(tmp_path, "1", "pass"))
    (status,) = slurm.status([handle])
    assert status.state == "lost" and "lost by the cluster" in status.reason
    written(tmp_path, "1", 0)
    assert slurm.status([handle])[0].exit_code == 0
    written(tmp_path, "1", 2)
    (status,) = slurm.status([handle])
    assert (status.state, status.exit_code) == ("ended", 2)


def test_cancel_returns_at_once_and_asks_the_cluster(tmp_path):
    slurm, cluster = runner()
    handle = slurm.submit(spec(tmp_path, "1", "pass"))
    slurm.cancel(handle)
    slurm.cancel(handle, force=True)
    deadline = time.monotonic() + 5
    while len(cluster.cancelled) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(cluster.cancelled) == [("101", False), ("101", True)]


def test_bad_settings_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="environment"):
        SlurmRunner(environment="docker-compose")
    with pytest.raises(ValueError, match="transport"):
        SlurmRunner(transport="ssh")


def test_the_runner_is_unavailable_with_the_reason_when_slurm_is_not_installed(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    found = SlurmRunner(bin_dir=str(tmp_path)).availability()
    assert not found.available and "not installed" in found.reason
