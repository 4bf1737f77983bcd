"""A job on every file of a tag, through POST /jobs and the dashboard's form: all the jobs or none, each refused file
named with its reason, retries with an Idempotency-Key answered once. The queue is paused: nothing here runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from appliance.errors import Conflict
from tests.conftest import API, write_image

HTML = {"accept": "text/html"}


def upload(client, path: Path, tag: str) -> str:
    reply = client.post(f"{API}/upload", files={"file": (path.name, path.read_bytes())}, data={"tag": tag})
    assert reply.status_code == 200, reply.text
    return reply.json()["uuid"]


@pytest.fixture
def tagged(client, tmp_path):
    """Two usable images, one without sky coordinates and one without a beam, all tagged "field-a", and one usable
    image tagged otherwise; the queue paused so that the jobs stay PENDING."""
    client.appliance.queue.pause()
    files = {
        name: upload(client, write_image(tmp_path / f"{name}.fits", **kwargs), tag)
        for name, kwargs, tag in [
            ("good1", {}, "field-a"),
            ("good2", {"shape": (80, 48)}, "field-a"),
            ("flat", {"wcs": False}, "field-a"),
            ("beamless", {"beam": False}, "field-a"),
            ("elsewhere", {}, "field-b"),
        ]
    }
    yield files
    for job in client.get(f"{API}/jobs").json():
        client.post(f"{API}/job/{job['job_id']}/cancel")


def job_folders(client) -> list[Path]:
    return sorted((client.appliance.settings.jobs_dir / "anonymous").glob("job_*"))


def test_a_job_per_file_of_the_tag_or_none_naming_each_refused_file(client, tagged):
    refused = client.post(f"{API}/jobs", json={"app": "sep", "tag": "field-a"})
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert body["error"] == "files_refused" and body["state"] == "ABORTED"
    reasons = {f["filename_orig"]: (f["uuid"], f["error"]) for f in body["files"]}
    assert reasons == {
        "flat.fits": (tagged["flat"], "no_celestial_wcs"),
        "beamless.fits": (tagged["beamless"], "no_beam"),
    }
    assert "flat.fits" in body["status"] and "beamless.fits" in body["status"]
    assert client.get(f"{API}/jobs").json() == [] and job_folders(client) == []

    # a beam given in the options makes the beamless image usable; the flat one stays refused
    with_beam = client.post(f"{API}/jobs", json={"app": "sep", "tag": "field-a", "job_inputs": {"beam-bmaj": 6.5}})
    assert [f["filename_orig"] for f in with_beam.json()["files"]] == ["flat.fits"]
    assert client.get(f"{API}/jobs").json() == []

    assert client.get(f"{API}/delete/{tagged['flat']}").status_code == 200
    accepted = client.post(
        f"{API}/jobs", json={"app": "sep", "tag": "field-a", "job_inputs": {"beam-bmaj": 6.5}, "walltime": 60}
    )
    assert accepted.status_code == 202, accepted.text
    jobs = accepted.json()["jobs"]
    assert accepted.json()["status"] == "3 job(s) submitted and registered with success"
    assert sorted(j["data_inputs"] for j in jobs) == sorted(tagged[n] for n in ("good1", "good2", "beamless"))
    for job in jobs:
        assert job["state"] == "PENDING" and job["tag"] == "field-a" and job["app"] == "sep"
        assert job["job_inputs"] == {"beam-bmaj": 6.5} and job["options"]["beam-bmaj"] == 6.5
        assert client.get(f"{API}/job/{job['job_id']}").json()["state"] == "PENDING"
    listed = client.get(f"{API}/jobs", params={"tag": "field-a"})
    assert {j["job_id"] for j in listed.json()} == {j["job_id"] for j in jobs} and len(job_folders(client)) == 3


def test_options_are_checked_once_for_all_and_for_each_file(client, tagged):
    unknown = client.post(f"{API}/jobs", json={"app": "sep", "tag": "field-b", "job_inputs": {"seedclip": 4}})
    assert unknown.status_code == 422 and unknown.json()["options"] == {"seedclip": "unknown option"}
    crossed = client.post(f"{API}/jobs", json={"app": "sep", "tag": "field-b", "job_inputs": {"seedthr": 2}})
    assert crossed.status_code == 422 and crossed.json()["error"] == "files_refused"
    (only,) = crossed.json()["files"]
    assert only["filename_orig"] == "elsewhere.fits" and only["options"] == {"mergethr": "must be below seedthr (2.0)"}
    for body, status, code in [
        ({"app": "sep", "tag": "no-such-tag"}, 404, "no_tagged_files"),
        ({"app": "sep", "tag": "  "}, 400, "missing_tag"),
        ({"app": "sep"}, 400, "missing_tag"),
        ({"app": "nope", "tag": "field-b"}, 400, "unknown_app"),
        ({"app": "sep", "tag": "field-b", "walltime": 0}, 400, "invalid_walltime"),
        ({"app": "sep", "tag": "field-b", "data_inputs": tagged["good1"]}, 400, "invalid_request"),
    ]:
        reply = client.post(f"{API}/jobs", json=body)
        assert (reply.status_code, reply.json()["error"]) == (status, code), body
    assert client.get(f"{API}/jobs").json() == []


def test_a_file_whose_bytes_are_gone_is_refused(client, tagged):
    record = client.appliance.files.get("anonymous", tagged["good2"])
    client.appliance.files.path(record).unlink()
    reply = client.post(f"{API}/jobs", json={"app": "sep", "tag": "field-a", "job_inputs": {"beam-bmaj": 6.5}})
    errors = {f["filename_orig"]: f["error"] for f in reply.json()["files"]}
    assert errors == {"good2.fits": "file_missing", "flat.fits": "no_celestial_wcs"}
    assert client.get(f"{API}/jobs").json() == []


def test_a_file_deleted_while_the_jobs_are_recorded_leaves_nothing(client, tagged):
    jobs = client.appliance.jobs
    records = [client.appliance.files.get("anonymous", tagged[name]) for name in ("good1", "elsewhere")]
    client.appliance.files.delete("anonymous", tagged["elsewhere"])
    app = client.appliance.apps.get("sep")
    with pytest.raises(Conflict, match="deleted while the jobs were submitted"):
        jobs._record("anonymous", app, {}, app.schema.validate({}), records, "field-a", 60.0, "local")
    assert jobs.list("anonymous")[1] == 0 and job_folders(client) == []


def test_the_same_tagged_submission_sent_again_with_its_key_makes_its_jobs_once(client, tagged):
    key = {"Idempotency-Key": "tagged-1"}
    body = {"app": "sep", "tag": "field-b"}
    first = client.post(f"{API}/jobs", json=body, headers=key)
    again = client.post(f"{API}/jobs", json=body, headers=key)
    assert first.status_code == again.status_code == 202 and again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert len(client.get(f"{API}/jobs").json()) == 1
    other = client.post(f"{API}/jobs", json={**body, "job_inputs": {"npixmin": 7}}, headers=key)
    assert other.status_code == 422 and other.json()["error"] == "idempotency_key_reused"
    # a refusal is not kept: the same key may be used once the files are fixed
    refused = client.post(f"{API}/jobs", json={"app": "sep", "tag": "field-a"}, headers={"Idempotency-Key": "t2"})
    assert refused.status_code == 422 and "idempotent-replayed" not in refused.headers


def test_the_dashboard_runs_a_finder_on_every_file_of_a_tag(client, tagged):
    files_page = client.get("/files", params={"tag": "field-a"}, headers=HTML).text
    assert 'href="/files/run?tag=field-a"' in files_page and "on the 4 files tagged “field-a”" in files_page
    form = client.get("/files/run", params={"tag": "field-a", "app": "sep"}, headers=HTML)
    assert form.status_code == 200 and 'action="/files/run?tag=field-a"' in form.text
    assert all(name in form.text for name in ("good1.fits", "good2.fits", "flat.fits", "beamless.fits"))
    assert "elsewhere.fits" not in form.text and "Run sep (fast) on 4 files" in form.text
    fragment = client.get("/files/run/form", params={"tag": "field-a", "app": "pybdsf"}).text
    assert 'name="app" value="pybdsf"' in fragment and 'action="/files/run?tag=field-a"' in fragment

    refused = client.post("/files/run", params={"tag": "field-a"}, data={"app": "sep", "npixmin": "6"}, headers=HTML)
    assert refused.status_code == 422 and "<h1>" in refused.text
    listed = re.search(r'<ul id="refused-files".*?</ul>', refused.text, re.S).group(0)
    assert "flat.fits</a>: sep needs an image with a celestial WCS" in listed and "beamless.fits</a>" in listed
    assert "good1.fits" not in listed and 'value="6"' in refused.text  # the values sent are kept
    by_htmx = client.post("/files/run", params={"tag": "field-a"}, data={"app": "sep"}, headers={"HX-Request": "true"})
    assert by_htmx.status_code == 422 and 'id="refused-files"' in by_htmx.text and "<h1>" not in by_htmx.text
    assert client.get(f"{API}/jobs").json() == []

    accepted = client.post(
        "/files/run", params={"tag": "field-b"}, data={"app": "sep", "npixmin": "7"}, follow_redirects=False
    )
    assert accepted.status_code == 303 and accepted.headers["location"] == "/jobs?tag=field-b"
    (job,) = client.get(f"{API}/jobs").json()
    assert job["data_inputs"] == tagged["elsewhere"] and job["options"]["npixmin"] == 7 and job["tag"] == "field-b"
