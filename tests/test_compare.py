"""Comparing two finders on the same image: cross-match, counts, products, refusals."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.table import Table

from appliance.compare import COLOURS, comparison_table, cross_match, summary
from tests.conftest import API, upload_file, wait_for_job


def table(ra, dec, flux):
    return Table({"ra": np.asarray(ra, float), "dec": np.asarray(dec, float), "int_flux": np.asarray(flux, float)})


def test_cross_match_is_one_to_one_within_the_radius():
    arcsec = 1 / 3600
    a = table([10, 10 + 20 * arcsec, 10 + 60 * arcsec], [0, 0, 0], [1.0, 2.0, 3.0])
    # b: one close to a[0], two near a[1] (only the nearer pairs), one far from everything
    b = table([10 + 1 * arcsec, 10 + 21 * arcsec, 10 + 23 * arcsec, 11], [0, 0, 0, 0], [1.1, 1.0, 5.0, 9.0])
    match = cross_match(a, b, radius_arcsec=5.0)
    assert list(match.a) == [0, 1] and list(match.b) == [0, 1]
    np.testing.assert_allclose(match.separation_arcsec, [1.0, 1.0], rtol=1e-3)
    assert list(match.only_a) == [2] and list(match.only_b) == [2, 3]
    rows = comparison_table(a, b, match)
    assert list(rows["class"]) == ["matched", "matched", "only_a", "only_b", "only_b"]
    assert rows["flux_ratio"][0] == pytest.approx(1.1) and np.isnan(rows["flux_ratio"][2])
    assert list(rows["component_a"]) == [1, 2, 3, 0, 0] and list(rows["component_b"]) == [1, 2, 0, 3, 4]
    assert rows["d_ra"][0] == pytest.approx(1.0, rel=1e-3) and rows["separation"].unit == "arcsec"
    counts = summary(rows)["counts"]
    assert counts == {"matched": 2, "only_a": 1, "only_b": 2}
    assert cross_match(a, table([], [], []), 5.0).only_a.tolist() == [0, 1, 2]


def test_compare_two_finders_through_the_api(client, sky):
    file_uuid = upload_file(client, sky[0])
    jobs = []
    for app, inputs in (("aegean", {"ncores": 2}), ("sep", {})):
        reply = client.post(f"{API}/job", json={"app": app, "job_inputs": inputs, "data_inputs": file_uuid})
        jobs.append(reply.json()["job_id"])
    for job_id in jobs:
        assert wait_for_job(client, job_id)["state"] == "SUCCESS"
    reply = client.post(f"{API}/compare", json={"jobs": jobs})
    assert reply.status_code == 201, reply.text
    result = reply.json()
    assert result["radius_arcsec"] == pytest.approx(6.5) and result["apps"] == ["aegean", "sep"]
    assert result["counts"] == {"matched": 20, "only_a": 0, "only_b": 0}
    assert 0.9 < result["flux_ratio"]["median"] < 1.1 and result["offset_arcsec"]["median"] < 1.0
    compare_id = result["compare_id"]
    assert client.get(f"{API}/compare/{compare_id}").json() == result
    votable = Table.read(io.BytesIO(client.get(f"{API}/compare/{compare_id}/table").content), format="votable")
    assert len(votable) == 20 and set(votable["class"]) == {"matched"}
    csv = client.get(f"{API}/compare/{compare_id}/table", params={"format": "csv"}).text
    assert csv.startswith("class,ra,dec")
    from regions import Regions

    text = client.get(f"{API}/compare/{compare_id}/regions").text
    assert len(Regions.parse(text, format="ds9")) == 20 and f"color={COLOURS['matched']}" in text
    assert client.get(f"{API}/compare/{compare_id}/plot").content.startswith(b"\x89PNG")
    tight = client.post(f"{API}/compare", json={"jobs": jobs, "radius_arcsec": 0.01}).json()
    assert tight["counts"]["matched"] < 20 and tight["counts"]["only_a"] == 20 - tight["counts"]["matched"]
    mixed = client.get(f"{API}/compare/{tight['compare_id']}/regions").text
    assert f"color={COLOURS['only_a']}" in mixed and f"color={COLOURS['only_b']}" in mixed
    listed = client.get(f"{API}/comparisons")
    assert listed.headers["x-total-count"] == "2"
    assert client.delete(f"{API}/compare/{compare_id}").status_code == 200
    assert client.get(f"{API}/compare/{compare_id}").status_code == 404


def test_compare_refusals(client, sky, image):
    first = upload_file(client, sky[0])
    other = upload_file(client, image)
    a = client.post(f"{API}/job", json={"app": "sep", "data_inputs": first}).json()["job_id"]
    b = client.post(f"{API}/job", json={"app": "sep", "data_inputs": other}).json()["job_id"]
    for job_id in (a, b):
        wait_for_job(client, job_id)
    for body, status, code in (
        ({"jobs": [a]}, 400, "invalid_jobs"),
        ({"jobs": "a,b"}, 400, "invalid_jobs"),
        ({"jobs": [a, b]}, 422, "different_images"),
        ({"jobs": [a, a], "radius_arcsec": -1}, 400, "invalid_radius"),
        ({"jobs": [a, a], "kind": "blobs"}, 400, "invalid_kind"),
        ({"jobs": [a, "no-such-job"]}, 404, "job_not_found"),
    ):
        reply = client.post(f"{API}/compare", json=body)
        assert reply.status_code == status and reply.json()["error"] == code, (body, reply.text)
    assert client.get(f"{API}/comparisons").json() == []
