"""The job lifecycle with real finder processes: cancel, wall time, failure, the core budget, listing, deletion,
shutdown and crash recovery; the status poll against the job's document."""

from __future__ import annotations

import io
import signal
import subprocess
import tarfile
import time
from datetime import datetime, timedelta

import numpy as np
import psutil
import pytest
from astropy.io import fits
from sqlalchemy import delete, update

from appliance.core import Appliance
from appliance.errors import NotFound
from appliance.jobs import job_document, now
from appliance.models import Job, Step
from runners import Handle, RunSpec
from runners.local import LocalRunner
from tests.conftest import API, LONG_JOB, api_client, group_members, make_settings, upload_file, wait_for_job

pytestmark = pytest.mark.e2e  # real finder processes


def submit(client, file_uuid, app="aegean", job_inputs=None, **extra):
    reply = client.post(
        f"{API}/job", json={"app": app, "job_inputs": job_inputs or {}, "data_inputs": file_uuid, **extra}
    )
    assert reply.status_code == 202, reply.text
    return reply.json()["job_id"]


def running_pid(client, job_id) -> int:
    status = wait_for_job(client, job_id, until=lambda s: s["state"] == "RUNNING" and s["pid"], timeout=60)
    return int(status["pid"])


def tarball_names(client, job_id) -> set[str]:
    reply = client.get(f"{API}/job/{job_id}/output")
    assert reply.status_code == 200
    return {m.name.split("/", 1)[1] for m in tarfile.open(fileobj=io.BytesIO(reply.content)).getmembers()}


def test_cancel_stops_every_process_of_a_running_job(client, slow_sky):
    job_id = submit(client, upload_file(client, slow_sky), job_inputs=LONG_JOB)
    pid = running_pid(client, job_id)
    assert group_members(pid, timeout=0)
    begun = time.monotonic()
    reply = client.post(f"{API}/job/{job_id}/cancel")
    assert time.monotonic() - begun < 1
    assert reply.status_code == 200 and reply.json()["state"] == "CANCELING"
    status = wait_for_job(client, job_id, timeout=30)
    assert group_members(pid) == []
    assert status["state"] == "CANCELED" and status["status"] == "Job canceled by user"
    assert {"job.log", "job.json"} <= tarball_names(client, job_id)
    assert "already completed" in client.get(f"{API}/job/{job_id}/cancel").json()["status"]
    assert client.get(f"{API}/job/{job_id}/sources").json()["error"] == "output_not_available"


def test_wall_time_limit_ends_timed_out_without_processes(client, slow_sky):
    job_id = submit(client, upload_file(client, slow_sky), job_inputs=LONG_JOB, walltime=3)
    pid = running_pid(client, job_id)
    status = wait_for_job(client, job_id, timeout=60)
    assert status["state"] == "TIMED-OUT" and status["exit_code"] == 124 and "wall-time" in status["status"]
    assert group_members(pid) == []
    assert "job.log" in tarball_names(client, job_id)


def test_a_failing_finder_ends_failure_with_its_log_in_the_output(client, tmp_path, sky):
    blank = tmp_path / "blank.fits"
    header = fits.getheader(sky[0])
    fits.PrimaryHDU(np.zeros((128, 128), np.float32), header=header).writeto(blank)
    job_id = submit(client, upload_file(client, blank), app="pybdsf")
    status = wait_for_job(client, job_id)
    assert status["state"] == "FAILURE" and status["exit_code"] == 1
    assert "pybdsf failed with exit code 1" in status["status"]
    log = client.get(f"{API}/job/{job_id}/log")
    assert "Traceback" in log.text and log.headers["x-log-size"] == str(len(log.content))
    for offset in (len(log.content), 2**53 - 1):
        tail = client.get(f"{API}/job/{job_id}/log", params={"offset": offset})
        assert tail.status_code == 200 and tail.content == b"" and tail.headers["x-log-size"] == str(len(log.content))
    beyond = client.get(f"{API}/job/{job_id}/log", params={"offset": 2**63 - 1})
    assert beyond.status_code == 400 and beyond.json()["error"] == "invalid_request"
    assert {"job.log", "job.json", "pybdsf_parameters.json"} <= tarball_names(client, job_id)
    for route in ("sources", "output-components", "preview", "output-plot"):
        reply = client.get(f"{API}/job/{job_id}/{route}")
        assert reply.status_code == 404 and reply.json()["error"] == "output_not_available", route


def test_two_2_core_jobs_on_2_cores_run_in_turn_two_1_core_jobs_together(tmp_path, sky):
    with api_client(make_settings(tmp_path / "home", job_cores=2)) as client:
        file_uuid = upload_file(client, sky[0])
        pairs = {}
        for cores in (2, 1):
            ids = [submit(client, file_uuid, job_inputs={"ncores": cores}) for _ in range(2)]
            spans = []
            for job_id in ids:
                assert wait_for_job(client, job_id)["state"] == "SUCCESS"
                job = client.get(f"{API}/job/{job_id}").json()
                spans.append((datetime.fromisoformat(job["start_date"]), datetime.fromisoformat(job["end_date"])))
            pairs[cores] = sorted(spans)
        (a, b) = pairs[2]
        assert b[0] >= a[1], "two 2-core jobs overlapped on 2 cores"
        (a, b) = pairs[1]
        assert b[0] < a[1], "two 1-core jobs did not run side by side on 2 cores"


def test_pending_jobs_wait_for_cores_report_202_and_cancel_at_once(tmp_path, slow_sky):
    with api_client(make_settings(tmp_path / "home", job_cores=1)) as client:
        file_uuid = upload_file(client, slow_sky)
        first = submit(client, file_uuid, job_inputs=LONG_JOB)
        running_pid(client, first)
        waiting = [submit(client, file_uuid, tag=f"t{n % 2}") for n in range(4)]
        time.sleep(0.5)
        for job_id in waiting:
            assert client.get(f"{API}/job/{job_id}/status").json()["state"] == "PENDING"
        reply = client.get(f"{API}/job/{waiting[0]}/output")
        assert reply.status_code == 202 and reply.json()["job_id"] == waiting[0]
        assert "not yet completed" in reply.json()["status"]

        listed = client.get(f"{API}/jobs", params={"state": "pending"})
        assert listed.headers["x-total-count"] == "4" and [j["job_id"] for j in listed.json()] == waiting[::-1]
        assert client.get(f"{API}/jobs", params={"tag": "t1"}).headers["x-total-count"] == "2"
        page = client.get(f"{API}/jobs", params={"limit": 2, "offset": 1})
        assert len(page.json()) == 2 and 'rel="next"' in page.headers["link"]
        assert client.get(f"{API}/jobs", params={"app": "pybdsf"}).json() == []
        doc = listed.json()[0]
        assert {
            "job_id",
            "submit_date",
            "app",
            "job_inputs",
            "data_inputs",
            "tag",
            "state",
            "status",
            "pid",
            "exit_code",
            "elapsed_time",
        } <= set(doc) and "job_top_dir" not in doc

        assert client.post(f"{API}/job/{waiting[0]}/cancel").json()["state"] == "CANCELED"
        assert "job.json" in tarball_names(client, waiting[0])
        conflict = client.delete(f"{API}/job/{first}")
        assert conflict.status_code == 409 and conflict.json()["error"] == "job_running"
        for job_id in [first, *waiting[1:]]:
            client.post(f"{API}/job/{job_id}/cancel")
        assert {wait_for_job(client, j, timeout=30)["state"] for j in [first, *waiting]} == {"CANCELED"}


def test_delete_a_job_and_a_file_that_finished_jobs_used(client, sky):
    file_uuid = upload_file(client, sky[0])
    job_id = submit(client, file_uuid, app="pybdsf")
    assert wait_for_job(client, job_id)["state"] == "SUCCESS"
    folder = client.appliance.jobs.folder(client.appliance.jobs.get("anonymous", job_id))

    assert client.get(f"{API}/delete/{file_uuid}").status_code == 200  # the finished job keeps its products
    kept = client.get(f"{API}/job/{job_id}").json()
    assert kept["data_inputs"] == file_uuid and client.get(f"{API}/job/{job_id}/sources").status_code == 200

    reply = client.delete(f"{API}/job/{job_id}")
    assert reply.status_code == 200 and not folder.exists()
    assert client.get(f"{API}/job/{job_id}/status").status_code == 404
    assert client.delete(f"{API}/job/{job_id}").status_code == 404


def test_shutdown_requeues_a_running_job_and_the_next_start_runs_it(tmp_path, slow_sky):
    settings = make_settings(tmp_path / "home")
    with api_client(settings) as client:
        job_id = submit(client, upload_file(client, slow_sky), job_inputs=LONG_JOB)
        pid = running_pid(client, job_id)
    assert group_members(pid) == []
    appliance = Appliance(settings)
    job = appliance.jobs.get("anonymous", job_id)
    assert job.state == "PENDING" and "shut down" in job.status and job.attempts == 1
    with api_client(settings) as client:
        second_pid = running_pid(client, job_id)
        assert second_pid != pid
        assert "attempt 2" in client.get(f"{API}/job/{job_id}/log").text
        client.post(f"{API}/job/{job_id}/cancel")
        wait_for_job(client, job_id, timeout=30)


def orphan(tmp_path) -> Handle:
    """A real process in its own group, as a killed appliance would leave a finder."""
    return LocalRunner().submit(RunSpec(name="sleep", command=["sleep", "300"], workdir=tmp_path))


def test_restart_kills_orphans_requeues_once_then_fails(tmp_path, sky):
    settings = make_settings(tmp_path / "home")
    with api_client(settings) as client:
        file_uuid = upload_file(client, sky[0])
        once, twice = (submit(client, file_uuid, job_inputs=LONG_JOB) for _ in range(2))
        client.post(f"{API}/job/{once}/cancel")
        client.post(f"{API}/job/{twice}/cancel")
        for job_id in (once, twice):
            wait_for_job(client, job_id, timeout=30)
    handles = {once: orphan(tmp_path), twice: orphan(tmp_path)}
    appliance = Appliance(settings)
    with appliance.db.session() as session:
        for job_id, attempts in ((once, 1), (twice, 2)):  # as the killed appliance left them
            handle = handles[job_id]
            session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(
                    state="RUNNING",
                    stage="run",
                    attempts=attempts,
                    handle={"runner": "local", **handle.data},
                    pid=handle.label,
                    end_date=None,
                )
            )
            session.execute(delete(Step).where(Step.job_id == job_id))  # its step, as the killed appliance left it
            session.add(Step(job_id=job_id, attempt=attempts, number=1, name="sleep", spec={}, runner="local",
                             state="running", handle={"runner": "local", **handle.data}, label=handle.label,
                             log_offset=0))  # fmt: skip
    with api_client(settings) as client:
        for handle in handles.values():
            assert group_members(handle.data["pid"]) == []
        failed = client.get(f"{API}/job/{twice}/status").json()
        assert failed["state"] == "FAILURE" and "interrupted twice" in failed["status"]
        assert "job.log" in tarball_names(client, twice)
        again = wait_for_job(client, once, until=lambda s: s["state"] in ("STARTED", "RUNNING"), timeout=30)
        assert again["state"] in ("STARTED", "RUNNING")
        assert "killed the job's processes left running" in client.get(f"{API}/job/{once}/log").text
        client.post(f"{API}/job/{once}/cancel")
        wait_for_job(client, once, timeout=30)


def test_orphan_reaping_never_kills_another_process(tmp_path):
    unrelated = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        started = psutil.Process(unrelated.pid).create_time()
        stale = Handle("local", {"pid": unrelated.pid, "create_time": started - 100.0, "label": "", "log": "x"})
        assert LocalRunner().status([stale])[0].state == "lost"
        LocalRunner().cancel(stale, force=True)
        assert unrelated.poll() is None
        same = Handle("local", {"pid": unrelated.pid, "create_time": started, "label": "", "log": "x"})
        assert LocalRunner().status([same])[0].state == "running"
        LocalRunner().cancel(same, force=True)
        assert unrelated.wait(5) == -signal.SIGKILL
    finally:
        unrelated.kill()


def test_restart_queues_pending_rows_without_a_task_and_removes_half_deleted_folders(tmp_path, sky):
    import uuid as uuidlib

    settings = make_settings(tmp_path / "home")
    with api_client(settings) as client:
        file_uuid = upload_file(client, sky[0])
    job_id = str(uuidlib.uuid4())
    appliance = Appliance(settings)
    with appliance.db.session() as session:  # committed, then the appliance died before queueing it
        session.add(
            Job(
                id=job_id,
                user="anonymous",
                app="pybdsf",
                data_inputs=file_uuid,
                file_uuid=file_uuid,
                job_inputs={},
                options=appliance.apps.get("pybdsf").schema.validate({}),
                tag=None,
                state="PENDING",
                status="Job submitted and registered with success",
                submit_date=now(),
                cores=1,
                walltime=600.0,
                attempts=0,
                runner="local",
                pid="",
            )
        )
    user_jobs = settings.jobs_dir / "anonymous"
    (user_jobs / f"job_{job_id}").mkdir(parents=True)
    stray = [user_jobs / f".trash-{uuidlib.uuid4()}", user_jobs / f"job_{uuidlib.uuid4()}"]
    for folder in stray:
        folder.mkdir()
        (folder / "catalog.fits").write_bytes(b"x")
    with api_client(settings) as client:
        assert not any(folder.exists() for folder in stray)
        assert wait_for_job(client, job_id)["state"] == "SUCCESS"


def test_status_is_the_job_documents_fields_and_only_for_its_user(appliance):
    started = now() - timedelta(seconds=90)
    rows = {
        "running": dict(state="RUNNING", start_date=started, end_date=None, exit_code=None, tag=None, pid="4242"),
        "ended": dict(state="FAILURE", start_date=started, end_date=started + timedelta(seconds=12.3456),
                      exit_code=1, tag="night", pid="4243"),
        "pending": dict(state="PENDING", start_date=None, end_date=None, exit_code=None, tag=None, pid=""),
    }  # fmt: skip
    with appliance.db.session() as session:
        for job_id, row in rows.items():
            session.add(
                Job(
                    id=job_id,
                    user="anonymous",
                    app="sep",
                    data_inputs="f",
                    file_uuid=None,
                    job_inputs={},
                    options={},
                    status=f"{job_id} here",
                    submit_date=started,
                    cores=1,
                    walltime=600.0,
                    runner="local",
                    **row,
                )  # fmt: skip
            )
    for job_id in rows:
        status = appliance.jobs.status("anonymous", job_id)
        document = job_document(appliance.jobs.get("anonymous", job_id))
        assert list(status) == ["job_id", "pid", "state", "status", "exit_code", "elapsed_time", "tag", "runner"]
        if job_id == "running":  # its elapsed time grows between the two reads
            assert 90 <= status.pop("elapsed_time") <= document.pop("elapsed_time")
        assert status == {k: document[k] for k in status}
    assert appliance.jobs.status("anonymous", "ended")["elapsed_time"] == 12.346
    with appliance.db.session() as session:  # a write through the pool is seen by the next status read
        session.execute(update(Job).where(Job.id == "pending").values(state="CANCELED", status="canceled"))
    assert appliance.jobs.status("anonymous", "pending")["state"] == "CANCELED"
    for user, job_id in (("someone-else", "ended"), ("anonymous", "missing"), ("anonymous", "x" * 37)):
        with pytest.raises(NotFound):
            appliance.jobs.status(user, job_id)
