"""Jobs through the API on the container runner, with a real podman started by the tests: aegean, pybdsf and sep in
the finders image give the same catalogs as on the local runner; caesar runs in an image (here the replay image,
or a real caesar image where one is given) with the same config, argv and products as the local app; CuTEx through
caesar-rest's job-image contract; cancel, the wall-time limit and a missing image; and SIGKILL of the appliance
while a container runs: the next start follows the container to its end."""

from __future__ import annotations

import os
import signal
import time

import httpx
import numpy as np
import pytest
from astropy.table import Table

from appliance.apps.caesar import read_caesar_catalogs
from appliance.testing import ServerProcess
from tests.conftest import API, LONG_JOB, api_client, make_settings, upload_file, wait_for_job

pytestmark = pytest.mark.e2e

# A real caesar image (e.g. sriggi/caesar:latest, pulled beforehand) to run the caesar test against instead of the
# replay image; its FindSource path inside the image, if not caesar-rest's.
REAL_CAESAR_IMAGE = os.environ.get("CAESAR_APPLIANCE_TEST_CAESAR_IMAGE", "")
REAL_CAESAR_FINDSOURCE = os.environ.get("CAESAR_APPLIANCE_TEST_CAESAR_FINDSOURCE", "")


def container_settings(home, **apps):
    settings = make_settings(home, job_cancel_grace_seconds=3)
    runners = {**settings.runners, "container": {**settings.runners["container"], "engine": "podman"}}
    return settings.replace(runners=runners, apps={**settings.apps, **apps})


def submit(client, file_uuid, app, runner, job_inputs=None, **extra) -> str:
    reply = client.post(f"{API}/job", json={"app": app, "data_inputs": file_uuid, "runner": runner,
                                            "job_inputs": job_inputs or {}, **extra})  # fmt: skip
    assert reply.status_code == 202, reply.text
    assert reply.json()["runner"] == runner
    return reply.json()["job_id"]


def components(client, job_id) -> Table:
    job = client.appliance.jobs.get("anonymous", job_id)
    return Table.read(client.appliance.jobs.folder(job) / "catalog_components.fits")


def same_rows(a: Table, b: Table) -> None:
    """Row for row; numbers to 1e-5 (aegean's fits differ in their last digits between two builds of numpy)."""
    assert len(a) == len(b) > 0
    for name in a.colnames:
        if a[name].dtype.kind in "fc":
            left, right = (np.ma.filled(np.ma.asarray(t[name], dtype=float), np.nan) for t in (a, b))
            assert np.allclose(left, right, equal_nan=True, rtol=1e-5, atol=0), name
        else:
            assert list(a[name]) == list(b[name]), name


@pytest.mark.parametrize("app", ["sep", "aegean", "pybdsf"])
def test_a_finder_in_the_finders_image_equals_the_same_job_on_the_local_runner(tmp_path, finders_image, sky, app):
    with api_client(container_settings(tmp_path / "home")) as client:
        runners = {r["name"]: r for r in client.get(f"{API}/runners").json()}
        assert runners["container"]["available"] and runners["container"]["capabilities"]["durable"]
        assert client.get(f"{API}/app/{app}").json()["runners"]["container"]["available"]
        file_uuid = upload_file(client, sky[0])
        local = submit(client, file_uuid, app, "local")
        contained = submit(client, file_uuid, app, "container")
        for job_id in (local, contained):
            status = wait_for_job(client, job_id, timeout=600)
            assert status["state"] == "SUCCESS", client.get(f"{API}/job/{job_id}/log").text
        assert client.get(f"{API}/job/{contained}/status").json()["pid"].startswith("caesar-appliance-")
        same_rows(components(client, local), components(client, contained))
        log = client.get(f"{API}/job/{contained}/log").text
        assert "on the container runner" in log and "step 1 ended with exit code 0" in log


def caesar_image_settings(home, caesar_image: str):
    caesar = {"runner": "container", "image": caesar_image}
    if caesar_image == REAL_CAESAR_IMAGE and REAL_CAESAR_FINDSOURCE:
        caesar["findsource"] = REAL_CAESAR_FINDSOURCE
    return container_settings(home, caesar=caesar)


@pytest.fixture(scope="session", params=["replay", "real"])
def caesar_image(request) -> str:
    """The same tests on the replay image and on a real caesar image (named by CAESAR_APPLIANCE_TEST_CAESAR_IMAGE,
    present in the tests' podman), which cannot be built or pulled here."""
    if request.param == "real":
        if not REAL_CAESAR_IMAGE:
            pytest.skip(
                "no real caesar image here (caesar needs CERN ROOT, and no registry can be reached): set "
                "CAESAR_APPLIANCE_TEST_CAESAR_IMAGE=sriggi/caesar:latest to run these tests against one"
            )
        request.getfixturevalue("container_engine")
        return REAL_CAESAR_IMAGE
    return request.getfixturevalue("caesar_replay_image")


@pytest.mark.parametrize("nproc", [1, 2], ids=["FindSource", "mpirun"])
def test_caesar_in_its_image_gives_the_products_of_its_recorded_run(tmp_path, caesar_image, shared_data, nproc):
    recorded = shared_data / "caesar-runs" / "synthetic-512"
    with api_client(caesar_image_settings(tmp_path / "home", caesar_image)) as client:
        assert client.get(f"{API}/app/caesar").json()["available"]
        file_uuid = upload_file(client, recorded / "input.fits")
        job_id = client.post(f"{API}/job", json={"app": "caesar", "data_inputs": file_uuid,
                                                 "job_inputs": {"nproc": nproc}}).json()["job_id"]  # fmt: skip
        status = wait_for_job(client, job_id, timeout=300)
        log = client.get(f"{API}/job/{job_id}/log").text
        assert status["state"] == "SUCCESS", log
        assert client.get(f"{API}/job/{job_id}").json()["runner"] == "container"
        assert ("mpirun -np 2" in log) is (nproc > 1) and "--config=caesar.cfg" in log
        expected = read_caesar_catalogs(recorded, recorded / "input.fits")
        assert len(components(client, job_id)) == len(expected.components)
        names = {f["name"] for f in client.get(f"{API}/job/{job_id}/files").json()}
        assert {"caesar.cfg", "catalog.json", "catalog_fitcomp.json", "catalog_components.fits"} <= names


def test_cutex_runs_through_the_job_image_contract(tmp_path, cutex_image, shared_data):
    recorded = shared_data / "caesar-runs" / "synthetic-512"
    settings = container_settings(tmp_path / "home", cutex={"runner": "container", "image": cutex_image})
    with api_client(settings) as client:
        file_uuid = upload_file(client, recorded / "input.fits")
        job_id = client.post(f"{API}/job", json={"app": "cutex", "data_inputs": file_uuid,
                                                 "job_inputs": {"seedthr": 5}}).json()["job_id"]  # fmt: skip
        status = wait_for_job(client, job_id, timeout=300)
        log = client.get(f"{API}/job/{job_id}/log").text
        assert status["state"] == "SUCCESS", log
        assert "--seedthr=5.0" in log
        truth = Table.read(recorded / "truth.csv")
        found = components(client, job_id)
        assert len(found) == len(truth)
        assert np.all(np.isfinite(found["ra"])) and np.all(found["int_flux"] > 0)


def test_a_missing_image_is_refused_with_the_command_that_gets_it(tmp_path, container_engine, image):
    settings = container_settings(tmp_path / "home", caesar={"runner": "container", "image": "sriggi/caesar:latest"})
    with api_client(settings) as client:
        described = client.get(f"{API}/app/caesar").json()
        assert not described["available"] and "podman pull sriggi/caesar:latest" in described["reason"]
        reply = client.post(f"{API}/job", json={"app": "caesar", "data_inputs": upload_file(client, image)})
        assert reply.status_code == 422 and reply.json()["error"] == "app_unavailable"
        assert "podman pull sriggi/caesar:latest" in reply.json()["status"]


def test_cancel_and_the_wall_time_limit_stop_a_container(tmp_path, finders_image, slow_sky):
    with api_client(container_settings(tmp_path / "home")) as client:
        file_uuid = upload_file(client, slow_sky)
        canceled = submit(client, file_uuid, "aegean", "container", LONG_JOB)
        timed_out = submit(client, file_uuid, "aegean", "container", LONG_JOB, walltime=8)
        wait_for_job(client, canceled, until=lambda s: s["state"] == "RUNNING", timeout=120)
        begun = time.monotonic()
        reply = client.post(f"{API}/job/{canceled}/cancel")
        assert time.monotonic() - begun < 1 and reply.json()["state"] == "CANCELING"
        status = wait_for_job(client, canceled, timeout=60)
        assert status["state"] == "CANCELED"
        status = wait_for_job(client, timed_out, timeout=120)
        assert status["state"] == "TIMED-OUT" and status["exit_code"] == 124
        for job_id in (canceled, timed_out):
            assert client.get(f"{API}/job/{job_id}/output").status_code == 200
        # nothing of the two is left running: their containers are removed once their ends were read
        ended = client.appliance.engine.runners.get("container").status(
            [_handle(client, job_id) for job_id in (canceled, timed_out)]
        )
        assert {s.state for s in ended} == {"lost"}


def _handle(client, job_id):
    from appliance.engine import _handle as handle_of

    return handle_of(client.appliance.engine.steps_of(job_id)[0])


def test_sigkill_of_the_appliance_while_containers_run_then_restart_follows_them_to_success(
    tmp_path, finders_image, caesar_image, cutex_image, shared_data
):
    """The issue's end-to-end case: a caesar, a cutex and an aegean job running in containers when the appliance is
    killed; the next start finds the containers and the jobs end SUCCESS with their products."""
    recorded = shared_data / "caesar-runs" / "synthetic-512"
    config = tmp_path / "appliance.toml"
    real = caesar_image == REAL_CAESAR_IMAGE and REAL_CAESAR_FINDSOURCE
    findsource = f'findsource = "{REAL_CAESAR_FINDSOURCE}"\n' if real else ""
    config.write_text(
        'runner = "container"\njob_cancel_grace_seconds = 3\n[runners.container]\nengine = "podman"\n'
        f'[apps.caesar]\nimage = "{caesar_image}"\n{findsource}[apps.cutex]\nimage = "{cutex_image}"\n'
    )
    home = tmp_path / "home"
    env = {"CAESAR_APPLIANCE_CONFIG": str(config)}
    with ServerProcess(home, env=env) as first:
        with httpx.Client(base_url=first.api, headers=first.headers, timeout=60) as http:
            file_uuid = http.post("/upload", files={"file": ("synthetic.fits", (recorded / "input.fits").read_bytes())}
                                  ).json()["uuid"]  # fmt: skip
            jobs = {}
            for app, options in (("caesar", {}), ("cutex", {}), ("aegean", {"bkggrid": 5, "bkgbox": 150})):
                reply = http.post("/job", json={"app": app, "data_inputs": file_uuid, "job_inputs": options})
                assert reply.status_code == 202, reply.text
                jobs[app] = reply.json()["job_id"]
            job_id = jobs["aegean"]
            deadline = time.monotonic() + 120
            while (status := http.get(f"/job/{job_id}/status").json())["state"] != "RUNNING":
                assert time.monotonic() < deadline and status["state"] in ("PENDING", "STARTED"), status
                time.sleep(0.05)
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)

    with ServerProcess(home, env=env) as second:
        with httpx.Client(base_url=second.api, headers=second.headers, timeout=60) as http:
            for app, job_id in jobs.items():
                deadline = time.monotonic() + 300
                while (status := http.get(f"/job/{job_id}/status").json())["state"] not in (
                    "SUCCESS", "FAILURE", "TIMED-OUT", "CANCELED"
                ):  # fmt: skip
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
                log = http.get(f"/job/{job_id}/log").text
                assert status["state"] == "SUCCESS", (app, log)
                assert http.get(f"/job/{job_id}/source-components").status_code == 200
            assert "the appliance restarted: following" in http.get(f"/job/{jobs['aegean']}/log").text
            steps = http.get(f"/job/{jobs['aegean']}/files/job.json").json()["steps"]
            assert [s["attempt"] for s in steps] == [1, 1]  # re-attached, not run again
        assert second.stop() == 0
