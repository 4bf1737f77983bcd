"""The OpenAPI description at /docs/openapi.json tells the truth: schemathesis sends every operation requests built
from it, and requests that break it, on a real appliance holding files, finished jobs and comparisons; every answer
must have a documented status, a documented media type and a body that matches its schema, and none may be a 5xx."""

from __future__ import annotations

import ast
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from appliance import errors
from appliance.testing import ServerProcess, fuzz_config, populate
from tests.conftest import API, REPO
from web.errors import ErrorBody

MAX_EXAMPLES = 8  # per operation and phase: about a minute on two busy cores
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]


def test_the_description_declares_bodies_answers_errors_and_media_types(client):
    spec = client.get("/docs/openapi.json").json()
    schemas, paths = spec["components"]["schemas"], spec["paths"]
    assert set(schemas["ErrorBody"]["required"]) == {"status", "error"}
    assert {"state", "options", "job_id", "jobs", "details"} <= set(schemas["ErrorBody"]["properties"])
    for route, method, media_type in [
        ("/job", "post", "application/json"),
        ("/jobs", "post", "application/json"),
        ("/compare", "post", "application/json"),
        ("/compare/catalog", "post", "multipart/form-data"),
        ("/upload", "post", "multipart/form-data"),
        ("/upload/{filename}", "put", "application/octet-stream"),
    ]:
        assert media_type in paths[API + route][method]["requestBody"]["content"], route
    with_catalog = paths[API + "/compare/catalog"]["post"]
    assert with_catalog["requestBody"]["content"]["multipart/form-data"]["schema"]["required"] == ["job", "catalog"]
    assert "Idempotency-Key" in [parameter["name"] for parameter in with_catalog["parameters"]]
    assert {"201", "400", "404", "413", "415", "422"} <= set(with_catalog["responses"])
    submit = paths[API + "/job"]["post"]["responses"]
    assert set(submit) == {"202", "400", "401", "403", "404", "409", "413", "422", "507"}
    assert submit["422"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    tagged = paths[API + "/jobs"]["post"]
    assert set(tagged["responses"]) == set(submit) and "Idempotency-Key" in {p["name"] for p in tagged["parameters"]}
    assert tagged["responses"]["202"]["headers"]["Idempotent-Replayed"]
    assert set(schemas["RefusedFile"]["required"]) == {"uuid", "filename_orig", "error", "status"}
    catalog = paths[API + "/job/{job_id}/catalog"]["get"]["responses"]
    assert {"200", "202", "206", "404", "416"} <= set(catalog)
    assert set(catalog["200"]["content"]) == {
        "application/x-votable+xml", "application/fits", "text/csv", "application/json", "text/plain"
    }  # fmt: skip
    assert "schema" in catalog["200"]["content"]["application/json"]
    assert "schema" not in catalog["206"]["content"]["application/json"]  # a byte range of JSON is not JSON
    assert set(paths[API + "/job/{job_id}/log"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    assert set(paths[API + "/job/{job_id}/output-plot"]["get"]["responses"]["200"]["content"]) == {"image/png"}
    assert set(paths[API + "/download/{file_uuid}"]["get"]["responses"]) >= {"200", "206", "404", "416"}
    assert paths[API + "/health"]["get"]["security"] == [{}]  # public
    assert not any(path.startswith(("/files", "/jobs", "/login", "/events")) for path in paths)  # pages stay out


def test_every_detail_a_domain_error_carries_is_a_field_of_the_error_body():
    """A refusal is built as an ErrorBody: a detail it does not declare would be a 500 instead of the refusal."""
    kinds = {name for name, value in vars(errors).items() if isinstance(value, type) and issubclass(value, Exception)}
    raised = set()
    for path in [*REPO.glob("appliance/**/*.py"), *REPO.glob("web/**/*.py"), *REPO.glob("runners/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in kinds:
                raised |= {(keyword.arg, f"{path.relative_to(REPO)}:{node.lineno}") for keyword in node.keywords}
    undeclared = [(name, where) for name, where in raised if name not in ErrorBody.__struct_fields__]
    assert not undeclared, f"add these to web.errors.ErrorBody: {undeclared}"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict[str, list[str]]]]:
    folder: Path = tmp_path_factory.mktemp("openapi")
    with ServerProcess(folder / "home") as server:
        yield server, populate(server, folder / "data")


@pytest.fixture(scope="module")
def tally(request: pytest.FixtureRequest, served) -> Iterator[Counter]:
    """What the run sent and got, written at the end of the module's tests."""
    counts: Counter = Counter()
    yield counts
    summary = ", ".join(f"{name} {counts[name]}" for name in ("operations", "requests", "5xx", "violations"))
    statuses = " ".join(f"{name[7:]}×{n}" for name, n in sorted(counts.items()) if name.startswith("status "))
    with request.config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
        print(f"\nschemathesis: {summary} (answers: {statuses})")
    server, _ = served
    assert not server.logged_errors(), server.errors()


@pytest.fixture
def api_schema(served):
    server, ids = served
    config = schemathesis.Config.from_dict(fuzz_config(server, ids, max_examples=MAX_EXAMPLES, stateful=False))
    return schemathesis.openapi.from_url(f"{server.url}/docs/openapi.json", config=config)


@pytest.fixture(autouse=True)
def _node_id(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32 renames each operation's subtest through ``request.node._nodeid``, which pytest 9.2 no
    longer has."""
    request.node._nodeid = request.node.nodeid


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.e2e
@schema.parametrize()
@settings(deadline=timedelta(seconds=30), suppress_health_check=list(HealthCheck), database=None)
def test_every_answer_is_documented_and_none_is_a_server_error(case, tally):
    tally[f"operation {case.operation.label}"] = 1
    tally["operations"] = sum(1 for name in tally if name.startswith("operation "))
    response = case.call()
    tally["requests"] += 1
    tally["5xx"] += response.status_code >= 500
    tally[f"status {response.status_code}"] += 1
    try:
        case.validate_response(response, checks=CHECKS)
    except AssertionError:
        tally["violations"] += 1
        raise
