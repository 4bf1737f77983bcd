"""Jobs through the API on the Slurm runner, with the real Slurm cluster the tests start (``slurm_cluster``): aegean
equals the local runner's job row for row with no setting at all; caesar (the replay image, through podman on the
node); a failure with its exit code; cancel while pending and while running; the wall time; a memory limit; a jobs
folder the cluster cannot see; SIGKILL of the appliance mid-job; and slurmctld stopped for 20 s mid-job."""

from __future__ import annotations

import signal
import time

import httpx
import numpy as np
import pytest
from astropy.io import fits

from appliance.apps.caesar import read_caesar_catalogs
from appliance.testing import ServerProcess
from tests.conftest import API, LONG_JOB, api_client, make_settings, upload_file, wait_for_job
from tests.test_container_jobs import components, same_rows, submit

pytestmark = pytest.mark.e2e
ENDED = ("SUCCESS", "FAILURE", "TIMED-OUT", "CANCELED")


def slurm_settings(home, apps=None, **slurm):
    settings = make_settings(home, job_cancel_grace_seconds=3)
    runners = {**settings.runners, "slurm": {**settings.runners["slurm"], **slurm}}
    return settings.replace(runners=runners, apps={**settings.apps, **(apps or {})})


def slurm_ready(client, timeout: float = 30) -> dict:
    """GET /runners until the Slurm runner is available (its probe job has run), its entry."""
    deadline = time.monotonic() + timeout
    while True:
        found = {r["name"]: r for r in client.get(f"{API}/runners").json()}["slurm"]
        if found["available"] or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def slurm_id(client, job_id) -> str:
    label = client.get(f"{API}/job/{job_id}/status").json()["pid"]
    assert label.startswith("slurm job "), label
    return label.removeprefix("slurm job ")


def accounted(cluster, slurm_job: str, timeout: float = 30) -> str:
    """sacct's JobName|State of a Slurm job once it has ended there (slurmdbd has its records a few seconds late,
    with a stand-in "allocation" line meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = cluster.sacct(slurm_job, fields="JobName,State")
        name, _, state = (lines[0] if lines else "|").partition("|")
        live = state.split()[0] in ("PENDING", "RUNNING", "COMPLETING") if state else True
        if (name != "allocation" and not live) or time.monotonic() > deadline:
            return lines[0] if lines else ""
        time.sleep(0.3)


def test_an_aegean_job_on_slurm_with_no_setting_equals_the_same_job_on_the_local_runner(tmp_path, slurm_cluster, sky):
    with api_client(make_settings(tmp_path / "home")) as client:
        found = slurm_ready(client)
        assert found["available"], found["reason"]
        assert found["capabilities"]["durable"] and found["capacity_cores"] is None
        file_uuid = upload_file(client, sky[0])
        local = submit(client, file_uuid, "aegean", "local")
        on_slurm = submit(client, file_uuid, "aegean", "slurm")
        for job_id in (local, on_slurm):
            status = wait_for_job(client, job_id, timeout=300)
            assert status["state"] == "SUCCESS", client.get(f"{API}/job/{job_id}/log").text
        same_rows(components(client, local), components(client, on_slurm))
        # one Slurm job for both steps (BANE, aegean), named by the job's id
        assert accounted(slurm_cluster, slurm_id(client, on_slurm)) == f"{on_slurm}|COMPLETED"
        log = client.get(f"{API}/job/{on_slurm}/log").text
        assert "on the slurm runner" in log and "step 2 ended with exit code 0" in log
        assert client.get(f"{API}/job/{on_slurm}/source-components").status_code == 200


def test_caesar_on_slurm_runs_its_image_through_podman_on_the_node(tmp_path, slurm_cluster, caesar_replay_image,
                                                                   shared_data):  # fmt: skip
    recorded = shared_data / "caesar-runs" / "synthetic-512"
    settings = slurm_settings(tmp_path / "home", apps={"caesar": {"runner": "slurm", "image": caesar_replay_image}},
                              environment="podman")  # fmt: skip
    with api_client(settings) as client:
        assert slurm_ready(client)["available"]
        assert client.get(f"{API}/app/caesar").json()["runners"]["slurm"]["available"]
        job_id = client.post(f"{API}/job", json={"app": "caesar", "data_inputs": upload_file(client, recorded /
                                                                                             "input.fits")}).json()["job_id"]  # fmt: skip
        status = wait_for_job(client, job_id, timeout=300)
        log = client.get(f"{API}/job/{job_id}/log").text
        assert status["state"] == "SUCCESS", log
        assert client.get(f"{API}/job/{job_id}").json()["runner"] == "slurm" and "--config=caesar.cfg" in log
        expected = read_caesar_catalogs(recorded, recorded / "input.fits")
        assert len(components(client, job_id)) == len(expected.components)


def test_a_failing_step_ends_failure_with_its_exit_code_and_log(tmp_path, slurm_cluster, sky):
    blank = tmp_path / "blank.fits"
    fits.PrimaryHDU(np.zeros((128, 128), np.float32), header=fits.getheader(sky[0])).writeto(blank)
    with api_client(slurm_settings(tmp_path / "home")) as client:
        assert slurm_ready(client)["available"]
        job_id = submit(client, upload_file(client, blank), "pybdsf", "slurm")
        status = wait_for_job(client, job_id, timeout=300)
        assert status["state"] == "FAILURE" and status["exit_code"] == 1, status
        assert "pybdsf failed with exit code 1" in status["status"]
        assert "Traceback" in client.get(f"{API}/job/{job_id}/log").text
        assert accounted(slurm_cluster, slurm_id(client, job_id)) == f"{job_id}|FAILED"


def test_a_job_waiting_in_slurms_queue_says_why_and_is_cancelled_there(tmp_path, slurm_cluster, sky):
    blocker = slurm_cluster.run(["sbatch", "--parsable", "--cpus-per-task=2", f"--chdir={tmp_path}", "--wrap",
                                 "sleep 300"]).stdout.strip()  # fmt: skip
    try:
        with api_client(slurm_settings(tmp_path / "home")) as client:
            assert slurm_ready(client)["available"]
            job_id = submit(client, upload_file(client, sky[0]), "aegean", "slurm")
            # Slurm's reason: Resources, or Priority behind the runner's probe job waiting for the same node
            status = wait_for_job(client, job_id, until=lambda s: "Slurm: " in s["status"], timeout=60)
            assert status["state"] == "STARTED", status
            assert status["status"].split("queued by the slurm runner: Slurm: ")[1] in ("Resources", "Priority")
            slurm_job = slurm_id(client, job_id)
            assert client.post(f"{API}/job/{job_id}/cancel").status_code in (200, 202)
            status = wait_for_job(client, job_id, timeout=60)
            assert status["state"] == "CANCELED", status
            assert accounted(slurm_cluster, slurm_job).split("|")[1].startswith("CANCELLED")
    finally:
        slurm_cluster.run(["scancel", blocker], check=False)


def test_cancel_and_the_wall_time_stop_a_running_slurm_job(tmp_path, slurm_cluster, slow_sky):
    with api_client(slurm_settings(tmp_path / "home")) as client:
        assert slurm_ready(client)["available"]
        file_uuid = upload_file(client, slow_sky)
        canceled = submit(client, file_uuid, "aegean", "slurm", LONG_JOB)
        timed_out = submit(client, file_uuid, "aegean", "slurm", LONG_JOB, walltime=8)
        wait_for_job(client, canceled, until=lambda s: s["state"] == "RUNNING", timeout=120)
        begun = time.monotonic()
        reply = client.post(f"{API}/job/{canceled}/cancel")
        assert time.monotonic() - begun < 1 and reply.json()["state"] == "CANCELING"
        assert wait_for_job(client, canceled, timeout=60)["state"] == "CANCELED"
        status = wait_for_job(client, timed_out, timeout=120)
        assert status["state"] == "TIMED-OUT" and status["exit_code"] == 124, status
        for job_id in (canceled, timed_out):
            assert client.get(f"{API}/job/{job_id}/output").status_code == 200
            ended = accounted(slurm_cluster, slurm_id(client, job_id)).split("|")[1]
            assert ended not in ("PENDING", "RUNNING"), ended  # nothing left running on the cluster


def test_a_job_over_its_memory_limit_ends_out_of_memory(tmp_path, slurm_cluster, slow_sky):
    """jobacct_gather's OverMemoryKill (this machine has no cgroup plugin for Slurm) kills the batch job."""
    with api_client(slurm_settings(tmp_path / "home", memory_mb=60)) as client:
        assert slurm_ready(client)["available"]
        job_id = submit(client, upload_file(client, slow_sky), "aegean", "slurm", LONG_JOB)
        status = wait_for_job(client, job_id, timeout=120)
        assert status["state"] == "FAILURE" and "ran out of memory" in status["status"], status


def test_the_runner_is_unavailable_with_the_reason_when_the_cluster_cannot_see_the_jobs_folder(tmp_path,
                                                                                             slurm_cluster):  # fmt: skip
    home = tmp_path / "home"
    with api_client(slurm_settings(home, path_map={str(home): "/nonexistent/caesar-appliance"})) as client:
        deadline = time.monotonic() + 30
        while "probe job" not in ((found := slurm_ready(client, 0))["reason"] or "") or "checking" in found["reason"]:
            assert time.monotonic() < deadline, found
            time.sleep(0.3)
        assert not found["available"] and "path_map" in found["reason"]
        assert "/nonexistent/caesar-appliance" in found["reason"]


def wait_over_http(http, job_id, timeout=300) -> dict:
    deadline = time.monotonic() + timeout
    while (status := http.get(f"/job/{job_id}/status").json())["state"] not in ENDED:
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    return status


def test_sigkill_of_the_appliance_mid_job_then_restart_follows_the_slurm_job_to_success(tmp_path, slurm_cluster,
                                                                                      sky):  # fmt: skip
    home = tmp_path / "home"
    config = tmp_path / "appliance.toml"
    config.write_text('runner = "slurm"\n[runners.slurm]\npoll_seconds = 0.25\n')
    env = {"CAESAR_APPLIANCE_CONFIG": str(config)}
    with ServerProcess(home, env=env) as first:
        with httpx.Client(base_url=first.api, headers=first.headers, timeout=60) as http:
            deadline = time.monotonic() + 30
            while not {r["name"]: r for r in http.get("/runners").json()}["slurm"]["available"]:
                assert time.monotonic() < deadline
                time.sleep(0.2)
            file_uuid = http.post("/upload", files={"file": ("sky.fits", sky[0].read_bytes())}).json()["uuid"]
            reply = http.post("/job", json={"app": "aegean", "data_inputs": file_uuid,
                                            "job_inputs": {"bkggrid": 5, "bkgbox": 150}})  # fmt: skip
            assert reply.status_code == 202, reply.text
            job_id = reply.json()["job_id"]
            deadline = time.monotonic() + 120
            while (status := http.get(f"/job/{job_id}/status").json())["state"] != "RUNNING":
                assert time.monotonic() < deadline and status["state"] in ("PENDING", "STARTED"), status
                time.sleep(0.05)
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)

    with ServerProcess(home, env=env) as second:
        with httpx.Client(base_url=second.api, headers=second.headers, timeout=60) as http:
            status = wait_over_http(http, job_id)
            assert status["state"] == "SUCCESS", http.get(f"/job/{job_id}/log").text
            assert http.get(f"/job/{job_id}/source-components").status_code == 200
            assert "the appliance restarted: following" in http.get(f"/job/{job_id}/log").text
            steps = http.get(f"/job/{job_id}/files/job.json").json()["steps"]
            assert [s["attempt"] for s in steps] == [1, 1]  # re-attached, not run again
        assert second.stop() == 0


def test_a_job_survives_slurmctld_stopped_for_20_seconds(tmp_path, slurm_cluster, sky):
    with api_client(slurm_settings(tmp_path / "home", poll_seconds=0.25, timeout=5)) as client:
        assert slurm_ready(client)["available"]
        job_id = submit(client, upload_file(client, sky[0]), "aegean", "slurm", {"bkggrid": 5, "bkgbox": 150})
        wait_for_job(client, job_id, until=lambda s: s["state"] == "RUNNING", timeout=120)
        slurm_cluster.stop_controller()
        try:
            status = wait_for_job(client, job_id, until=lambda s: "does not answer" in s["status"], timeout=30)
            assert status["state"] == "RUNNING", status  # no false FAILURE while the controller is away
            time.sleep(max(0.0, 20 - 5))
            assert client.get(f"{API}/job/{job_id}/status").json()["state"] == "RUNNING"
        finally:
            slurm_cluster.start_controller()
        status = wait_for_job(client, job_id, timeout=120)
        assert status["state"] == "SUCCESS", client.get(f"{API}/job/{job_id}/log").text
        assert "followed again when it does" in client.get(f"{API}/job/{job_id}/log").text
