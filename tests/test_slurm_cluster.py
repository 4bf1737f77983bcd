"""The session's Slurm cluster (tests/slurm.py) does what the Slurm runner's tests count on: batch jobs seen through
squeue --json, scontrol and sacct to their end and exit code, memory limits enforced, slurmrestd with JWT, and jobs
that outlive a controller outage."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.slurm import REST_API

pytestmark = pytest.mark.e2e


def sbatch(cluster, folder: Path, *args: str) -> int:
    done = cluster.run(["sbatch", "--parsable", f"--chdir={folder}", f"--output={folder}/job-%j.out", *args])
    return int(done.stdout.strip().split(";")[0])


def squeue_job(cluster, job_id: int) -> dict:
    return next(job for job in cluster.squeue_json()["jobs"] if job["job_id"] == job_id)


def test_a_batch_job_is_followed_by_squeue_scontrol_and_sacct_to_completed(slurm_cluster, tmp_path):
    job_id = sbatch(slurm_cluster, tmp_path, "--job-name=hello", "--wrap", "echo hello; sleep 1")
    seen = set()
    deadline = time.monotonic() + 30
    while "RUNNING" not in seen and time.monotonic() < deadline:
        job = squeue_job(slurm_cluster, job_id)
        seen.add(job["job_state"])
        time.sleep(0.05)
    assert job["name"] == "hello" and job["job_state"] == "RUNNING" and job["state_reason"] == "None"

    fields = slurm_cluster.wait_for_job(job_id)
    assert (fields["JobState"], fields["ExitCode"], fields["Reason"]) == ("COMPLETED", "0:0", "None")
    assert (tmp_path / f"job-{job_id}.out").read_text() == "hello\n"
    done = squeue_job(slurm_cluster, job_id)  # squeue --json lists finished jobs too, for MinJobAge
    assert (done["job_state"], done["exit_code"]) == ("COMPLETED", 0)
    # sacct's Reason is the last one it waited for (ReqNodeNotAvail after another test restarted the controller)
    (line,) = slurm_cluster.wait_for_sacct(job_id, "COMPLETED")
    assert line.rsplit("|", 1)[0] == f"{job_id}|hello|COMPLETED|0:0"


def test_a_job_exiting_3_is_failed_with_exit_code_3(slurm_cluster, tmp_path):
    job_id = sbatch(slurm_cluster, tmp_path, "--job-name=three", "--wrap", "exit 3")
    fields = slurm_cluster.wait_for_job(job_id)
    assert (fields["JobState"], fields["ExitCode"], fields["Reason"]) == ("FAILED", "3:0", "NonZeroExitCode")
    job = squeue_job(slurm_cluster, job_id)
    assert (job["job_state"], job["state_reason"], job["exit_code"]) == ("FAILED", "NonZeroExitCode", 3 << 8)
    assert slurm_cluster.wait_for_sacct(job_id, "FAILED") == [f"{job_id}|three|FAILED|3:0|None"]


def test_a_job_over_its_memory_limit_is_killed(slurm_cluster, tmp_path):
    """jobacct_gather/linux samples every second and kills the step (SIGKILL): FAILED with exit code 0:9, and Slurm
    says why only in the job's output (no OUT_OF_MEMORY state without the cgroup plugins)."""
    begun = time.monotonic()
    job_id = sbatch(slurm_cluster, tmp_path, "--job-name=hog", "--mem=50M", "--wrap",
                    'python3 -c "b=bytearray(500*2**20); import time; time.sleep(5)"')  # fmt: skip
    fields = slurm_cluster.wait_for_job(job_id)
    assert time.monotonic() - begun < 5
    assert (fields["JobState"], fields["ExitCode"], fields["Reason"]) == ("FAILED", "0:9", "JobLaunchFailure")
    job = squeue_job(slurm_cluster, job_id)
    assert (job["job_state"], job["state_reason"], job["exit_code"]) == ("FAILED", "JobLaunchFailure", 9)
    assert "exceeded memory limit" in (tmp_path / f"job-{job_id}.out").read_text()
    assert slurm_cluster.wait_for_sacct(job_id, "FAILED") == [f"{job_id}|hog|FAILED|0:9|None"]


def test_slurmrestd_answers_with_a_token_and_runs_a_job_as_its_user(slurm_cluster):
    url = f"{slurm_cluster.rest_url}/slurm/{REST_API}"
    assert httpx.get(f"{url}/ping").status_code == 401
    headers = {"X-SLURM-USER-NAME": slurm_cluster.rest_user, "X-SLURM-USER-TOKEN": slurm_cluster.token(lifespan=300)}
    ping = httpx.get(f"{url}/ping", headers=headers)
    assert ping.status_code == 200 and ping.json()["pings"][0]["ping"] == "UP"

    shared = slurm_cluster.shared_dir()
    body = {"job": {"name": "rest-test", "current_working_directory": str(shared), "environment": {"PATH": "/bin:/usr/bin"},
                    "standard_output": f"{shared}/rest-%j.out"},
            "script": "#!/bin/sh\nid -un"}  # fmt: skip
    submitted = httpx.post(f"{url}/job/submit", headers=headers, json=body)
    assert submitted.status_code == 200 and submitted.json()["errors"] == [], submitted.text
    job_id = submitted.json()["job_id"]
    deadline = time.monotonic() + 30
    while (job := httpx.get(f"{url}/job/{job_id}", headers=headers).json()["jobs"][0])["job_state"] != "COMPLETED":
        assert job["job_state"] in ("PENDING", "RUNNING", "COMPLETING") and time.monotonic() < deadline, job
        time.sleep(0.1)
    assert (shared / f"rest-{job_id}.out").read_text() == f"{slurm_cluster.rest_user}\n"


def test_a_running_job_outlives_a_20_s_controller_outage(slurm_cluster, tmp_path):
    job_id = sbatch(slurm_cluster, tmp_path, "--job-name=outage", "--wrap", "sleep 23; echo done")
    slurm_cluster.wait_for_job(job_id, states=("RUNNING",))
    slurm_cluster.stop_controller()
    begun = time.monotonic()
    down = slurm_cluster.run(["squeue", "-h", "-j", str(job_id)], check=False)
    assert down.returncode != 0 and "Unable to contact slurm controller" in down.stderr
    time.sleep(20 - (time.monotonic() - begun))
    slurm_cluster.start_controller()
    assert slurm_cluster.job(job_id)["JobState"] == "RUNNING"
    fields = slurm_cluster.wait_for_job(job_id, timeout=30)
    assert (fields["JobState"], fields["ExitCode"]) == ("COMPLETED", "0:0")
    assert (tmp_path / f"job-{job_id}.out").read_text() == "done\n"


def test_a_controller_started_clear_forgets_every_job(slurm_cluster, tmp_path):
    """Last here: the job ids start again from 1 after it (sacct then shows the newest job of an id)."""
    job_id = sbatch(slurm_cluster, tmp_path, "--wrap", "sleep 60")
    slurm_cluster.wait_for_job(job_id, states=("RUNNING",))
    slurm_cluster.restart_controller(clear=True)
    assert slurm_cluster.job(job_id) == {}
    assert slurm_cluster.squeue_json()["jobs"] == []
    again = sbatch(slurm_cluster, tmp_path, "--wrap", "true")
    assert slurm_cluster.wait_for_job(again)["JobState"] == "COMPLETED"
