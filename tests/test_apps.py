"""App schemas: the describe shape, and every rule enforced at submission with the option named."""

from __future__ import annotations

import pytest

from appliance.apps.options import Choice, Flag, OptionSchema, Value
from appliance.errors import InvalidOptions
from tests.conftest import API, api_client, make_settings, upload_file, write_image

SCHEMA = OptionSchema(
    [
        Flag("save-map", "keep the map", category="OUTPUT"),
        Value("npix", "minimum pixels", value_type=int, default=5, min=1, max=100),
        Value("seedthr", "seed threshold", default=5.0, min=0.5),
        Choice("estimator", "background estimator", default="median", allowed_values=("mean", "median")),
        Value("name", "a label", value_type=str, default="", advanced=True),
        Value("must", "mandatory", value_type=int, default=None, mandatory=True),
    ]
)


def test_validate_fills_defaults_and_keeps_given_values():
    assert SCHEMA.validate({"must": 1, "npix": 7, "seedthr": 4, "save-map": True, "estimator": "mean"}) == {
        "save-map": True,
        "npix": 7,
        "seedthr": 4.0,
        "estimator": "mean",
        "name": "",
        "must": 1,
    }
    assert SCHEMA.validate({"must": 2.0})["must"] == 2  # an integral JSON number is an integer


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ({"nope": 1}, ("nope", "unknown option")),
        ({"npix": 3.7}, ("npix", "must be an integer")),
        ({"npix": "5"}, ("npix", "must be an integer")),
        ({"npix": True}, ("npix", "must be an integer")),
        ({"npix": 0}, ("npix", "at least 1")),
        ({"npix": 101}, ("npix", "at most 100")),
        ({"seedthr": "high"}, ("seedthr", "finite number")),
        ({"seedthr": False}, ("seedthr", "must be a float")),
        ({"save-map": 1}, ("save-map", "true or false")),
        ({"save-map": "true"}, ("save-map", "true or false")),
        ({"estimator": "mode"}, ("estimator", "one of mean, median")),
        ({"name": 3}, ("name", "must be a string")),
    ],
)
def test_each_rule_is_enforced_with_the_option_named(given, problem):
    with pytest.raises(InvalidOptions) as caught:
        SCHEMA.validate({"must": 1, **given})
    name, reason = problem
    assert reason in caught.value.problems[name]
    assert name in caught.value.message


def test_all_problems_are_reported_together_and_mandatory_is_checked():
    with pytest.raises(InvalidOptions) as caught:
        SCHEMA.validate({"npix": 0, "x": 1})
    assert set(caught.value.problems) == {"npix", "x", "must"}
    with pytest.raises(InvalidOptions):
        SCHEMA.validate([1, 2])


def test_describe_has_caesar_rest_fields():
    described = SCHEMA.describe()
    assert list(described) == ["save-map", "npix", "seedthr", "estimator", "name", "must"]
    assert described["save-map"] == {
        "mandatory": False,
        "type": "none",
        "description": "keep the map",
        "advanced": 0,
        "category": "OUTPUT",
        "subcategory": "",
        "enum": False,
        "default": False,
    }
    assert described["npix"]["type"] == "int" and described["npix"]["min"] == 1 and described["npix"]["max"] == 100
    assert described["estimator"]["enum"] is True and described["estimator"]["allowed_values"] == ["mean", "median"]
    assert described["name"]["advanced"] == 1 and described["must"]["mandatory"] is True


def test_apps_and_describe_routes(client):
    body = client.get(f"{API}/apps").json()
    assert body["apps"] == ["caesar", "aegean", "pybdsf", "sep", "cutex", "mrcnn"]
    for name in body["apps"]:
        if name not in ("caesar", "cutex", "mrcnn"):
            assert body["details"][name]["available"] is True and body["details"][name]["reason"] is None
        described = client.get(f"{API}/app/{name}/describe").json()
        assert described == client.appliance.apps.get(name).describe()
        for option in described.values():
            assert {"mandatory", "type", "description", "advanced", "category", "subcategory", "enum"} <= set(option)
    aegean = client.get(f"{API}/app/aegean/describe").json()
    for name in (
        "save-bkgmap",
        "save-rmsmap",
        "bkgbox",
        "bkggrid",
        "seedthr",
        "mergethr",
        "fit-maxcomponents",
        "no-logredir",
        "ncores",
    ):
        assert name in aegean, name
    assert aegean["bkgbox"]["default"] == 100 and aegean["mergethr"]["default"] == 2.6
    assert client.get(f"{API}/app/nope/describe").status_code == 404
    assert client.get(f"{API}/app/pybdsf").json()["options"]["seedthr"]["default"] == 5.0
    for name, image in (("cutex", "sriggi/cutex-job:latest"), ("mrcnn", "sriggi/mrcnn-detect:latest")):
        detail = body["details"][name]
        assert detail["runner"] == "container" and detail["image"] == image and detail["available"] is False
        assert "runs only in its container image" in detail["runners"]["local"]["reason"]
    assert body["details"]["aegean"]["runner"] == "local" and body["details"]["aegean"]["runners"]["local"]["available"]
    assert set(client.get(f"{API}/app/cutex/describe").json()) == {
        "seedthr",
        "npixmin",
        "npixpsf",
        "psflimmin",
        "psflimmax",
        "no-logredir",
    }
    assert client.get(f"{API}/app/mrcnn/describe").json()["scoreThr"]["category"] == "DETECT"


def test_container_apps_are_refused_without_a_container_engine_and_on_the_local_runner(tmp_path, image):
    settings = make_settings(tmp_path / "home")
    runners = {**settings.runners, "container": {**settings.runners["container"], "binary": str(tmp_path / "podman")}}
    with api_client(settings.replace(runners=runners)) as client:
        file_uuid = upload_file(client, image)
        listed = {r["name"]: r for r in client.get(f"{API}/runners").json()}
        assert listed["container"]["available"] is False and listed["container"]["reason"]
        assert listed["local"]["available"] and listed["local"]["default"]
        for app in ("cutex", "mrcnn"):
            reply = client.post(f"{API}/job", json={"app": app, "data_inputs": file_uuid})
            assert reply.status_code == 422 and reply.json()["error"] == "runner_unavailable"
            assert reply.json()["status"].startswith("the container runner is unavailable: ")
            reply = client.post(f"{API}/job", json={"app": app, "data_inputs": file_uuid, "runner": "local"})
            assert reply.status_code == 422 and reply.json()["error"] == "app_unavailable"
            assert "runs only in its container image" in reply.json()["status"]
        assert client.get(f"{API}/jobs").json() == []


@pytest.mark.parametrize(
    ("body", "status", "code", "named"),
    [
        ({"app": "aegean", "job_inputs": {"seedthr": "5"}}, 422, "invalid_options", "seedthr"),
        ({"app": "aegean", "job_inputs": {"bkgbox": 2}}, 422, "invalid_options", "bkgbox"),
        ({"app": "aegean", "job_inputs": {"ncores": 2.5}}, 422, "invalid_options", "ncores"),
        ({"app": "aegean", "job_inputs": {"save-bkgmap": "yes"}}, 422, "invalid_options", "save-bkgmap"),
        ({"app": "aegean", "job_inputs": {"seedthr": 3, "mergethr": 4}}, 422, "invalid_options", "mergethr"),
        ({"app": "pybdsf", "job_inputs": {"thresh_pix": 5}}, 422, "invalid_options", "thresh_pix"),
        ({"app": "pybdsf", "job_inputs": {"bkggrid": 10}}, 422, "invalid_options", "bkggrid"),
        ({"app": "nosuch"}, 400, "unknown_app", None),
        ({"job_inputs": {}}, 400, "missing_app", None),
        ({"app": "aegean", "data_inputs": None}, 400, "missing_data_inputs", None),
        ({"app": "aegean", "data_inputs": "0" * 32}, 404, "file_not_found", None),
        ({"app": "aegean", "walltime": -1}, 400, "invalid_walltime", None),
        ({"app": "aegean", "priority": 1}, 400, "invalid_request", None),
    ],
)
def test_submission_refusals(client, image, body, status, code, named):
    file_uuid = upload_file(client, image)
    reply = client.post(f"{API}/job", json={"data_inputs": file_uuid, **body})
    assert reply.status_code == status, reply.text
    answer = reply.json()
    assert answer["error"] == code and answer["state"] == "ABORTED"
    if named:
        assert named in answer["options"] and named in answer["status"]
    assert client.get(f"{API}/jobs").json() == []
    assert not any(client.appliance.settings.jobs_dir.rglob("*"))


def test_body_must_be_a_json_object(client):
    for content in (b"{not json", b"[1, 2]", b"", b'{"app": "\xff"}', b'{"app": "aegean", "tag": "\xc3"}'):
        reply = client.post(f"{API}/job", content=content, headers={"content-type": "application/json"})
        assert reply.status_code == 400 and reply.json()["error"] == "invalid_json"


@pytest.mark.parametrize("route", ["/job", "/compare"])
@pytest.mark.parametrize(("opening", "closing", "depth"), [("[", "]", 100_000), ('{"a":', "}", 5_000), ("[", "]", 33)])
def test_bodies_nested_too_deep_are_refused(client, route, opening, closing, depth):
    reply = client.post(
        f"{API}{route}", content=opening * depth + "1" + closing * depth, headers={"content-type": "application/json"}
    )
    assert reply.status_code == 400 and reply.json()["error"] == "invalid_json"
    assert "nested more than 32 levels" in reply.json()["status"]
    assert client.get(f"{API}/jobs").json() == [] and client.get(f"{API}/comparisons").json() == []


def test_images_a_finder_cannot_use_are_refused_at_submission(client, tmp_path):
    no_wcs = upload_file(client, write_image(tmp_path / "pixels.fits", wcs=False))
    reply = client.post(f"{API}/job", json={"app": "aegean", "data_inputs": no_wcs})
    assert reply.status_code == 422 and reply.json()["error"] == "no_celestial_wcs"

    no_beam = upload_file(client, write_image(tmp_path / "nobeam.fits", beam=False))
    reply = client.post(f"{API}/job", json={"app": "pybdsf", "data_inputs": no_beam})
    assert reply.status_code == 422 and reply.json()["error"] == "no_beam"
    assert "beam-bmaj" in reply.json()["status"]
    reply = client.post(
        f"{API}/job", json={"app": "pybdsf", "data_inputs": no_beam, "job_inputs": {"beam-bmaj": 6.5, "beam-bmin": 5.0}}
    )
    assert reply.status_code == 202
    client.post(f"{API}/job/{reply.json()['job_id']}/cancel")
