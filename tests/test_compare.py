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


def finished_job(client, file_uuid, app="sep", **job_inputs):
    reply = client.post(f"{API}/job", json={"app": app, "data_inputs": file_uuid, "job_inputs": job_inputs})
    job_id = reply.json()["job_id"]
    assert wait_for_job(client, job_id)["state"] == "SUCCESS"
    return job_id


def nearest_arcsec(positions, ra, dec):
    """For each (ra, dec), the distance to the nearest of ``positions`` (an n × 2 array of degrees)."""
    from astropy.coordinates import SkyCoord

    if not len(ra):
        return np.array([])
    _, separation, _ = SkyCoord(ra, dec, unit="deg").match_to_catalog_sky(SkyCoord(positions, unit="deg"))
    return separation.arcsec


def as_bytes(table, fmt):
    buffer = io.StringIO() if fmt.startswith("ascii") else io.BytesIO()
    table.write(buffer, format=fmt)
    value = buffer.getvalue()
    return value.encode() if isinstance(value, str) else value


def test_compare_a_job_with_a_published_catalog_in_every_format(client, sky):
    from astropy import units as u
    from astropy.coordinates import Angle

    from tests.conftest import published_catalog

    job_id = finished_job(client, upload_file(client, sky[0]))
    published, where, off_image = published_catalog(sky[0], sky[1])
    sexagesimal = Table({
        "_RAJ2000": Angle(published["RAJ2000"]).to_string(unit="hour", sep=":", precision=3),
        "_DEJ2000": Angle(published["DEJ2000"]).to_string(unit="deg", sep=":", precision=2, alwayssign=True),
        "Total_flux": published["S_int"] / 1e3,  # Jy, no unit: the default
    })  # fmt: skip
    in_hours = Table({"RA": published["RAJ2000"].to(u.hourangle), "Dec": published["DEJ2000"],
                      "Fint": published["S_int"]})  # fmt: skip
    no_units = Table({"ra_deg": published["RAJ2000"].value, "dec_deg": published["DEJ2000"].value,
                      "S_int_mJy": published["S_int"].value})  # fmt: skip
    uploads = [
        ("nvss.vot", as_bytes(published, "votable"), ("RAJ2000", "DEJ2000", "S_int")),
        ("sexagesimal.csv", as_bytes(sexagesimal, "ascii.csv"), ("_RAJ2000", "_DEJ2000", "Total_flux")),
        ("hours.ecsv", as_bytes(in_hours, "ascii.ecsv"), ("RA", "Dec", "Fint")),
        ("plain.fits", as_bytes(no_units, "fits"), ("ra_deg", "dec_deg", "S_int_mJy")),
    ]
    for name, content, (ra, dec, flux) in uploads:
        reply = client.post(f"{API}/compare/catalog", data={"job": job_id}, files={"catalog": (name, content)})
        assert reply.status_code == 201, (name, reply.text)
        result = reply.json()
        assert result["jobs"] == [job_id] and result["apps"] == ["sep"], name
        assert result["catalog"] == {"name": name, "rows": len(published), "outside_image": off_image,
                                     "columns": {"ra": ra, "dec": dec, "flux": flux}}, name  # fmt: skip
        counts = {cls: len(positions) for cls, positions in where.items()}
        assert result["counts"] == counts, name
        assert 0.9 < result["flux_ratio"]["median"] < 1.1 and result["offset_arcsec"]["median"] < 1.0, name
        rows = Table.read(io.BytesIO(client.get(f"{API}/compare/{result['compare_id']}/table").content))
        for cls, positions in where.items():
            chosen = rows[rows["class"] == cls]
            assert (nearest_arcsec(positions, chosen["ra"], chosen["dec"]) < 1.0).all(), (name, cls)
        only_b = rows[rows["class"] == "only_b"]
        assert list(only_b["component_b"]) == [len(published) - 2, len(published) - 1], name  # B's row numbers
    assert client.get(f"{API}/comparisons").headers["x-total-count"] == str(len(uploads))


def test_a_catalog_without_fluxes_compares_positions_only(client, sky):
    file_uuid = upload_file(client, sky[0])
    job_id = finished_job(client, file_uuid)
    positions = Table({"ra": sky[1]["ra"], "dec": sky[1]["dec"]})
    reply = client.post(
        f"{API}/compare/catalog",
        data={"job": job_id, "radius_arcsec": "3", "kind": "islands"},
        files={"catalog": ("positions.csv", as_bytes(positions, "ascii.csv"))},
    )
    assert reply.status_code == 201, reply.text
    result = reply.json()
    assert result["counts"]["matched"] == 20 and result["radius_arcsec"] == 3 and result["kind"] == "islands"
    assert result["flux_ratio"]["median"] is None and result["catalog"]["columns"]["flux"] is None
    assert client.get(f"{API}/compare/{result['compare_id']}/plot").content.startswith(b"\x89PNG")
    page = client.get(f"/comparisons/{result['compare_id']}", headers=HTML).text
    assert "data-viewer" in page and "flux none (no flux ratios)" in page

    # the image deleted: the comparison stays, without the viewer; a new one needs the image's footprint
    assert client.post(f"{API}/delete/{file_uuid}").status_code == 200
    page = client.get(f"/comparisons/{result['compare_id']}", headers=HTML)
    assert page.status_code == 200 and "The image was deleted" in page.text and "data-viewer" not in page.text
    again = client.post(f"{API}/compare/catalog", data={"job": job_id},
                        files={"catalog": ("positions.csv", as_bytes(positions, "ascii.csv"))})  # fmt: skip
    assert again.status_code == 422 and again.json()["error"] == "image_deleted"


def test_bad_catalogs_are_refused_and_leave_nothing(client, sky, settings):
    from tests.conftest import published_catalog

    job_id = finished_job(client, upload_file(client, sky[0]))
    published, _, _ = published_catalog(sky[0], sky[1])
    far = published.copy()
    far["RAJ2000"] += 10
    north_of_the_pole = published.copy()
    north_of_the_pole["DEJ2000"][4] = 95
    in_metres = published.copy()
    in_metres["RAJ2000"].unit = "m"
    good = ("nvss.vot", as_bytes(published, "votable"))
    for fields, files, status, code in (
        ({"job": job_id}, {"catalog": ("names.csv", b"name,flux\nA,1\n")}, 422, "no_positions"),
        ({"job": job_id}, {"catalog": ("half.csv", b"ra,flux\n150,1\n")}, 422, "no_positions"),
        ({"job": job_id}, {"catalog": ("broken.vot", b"<VOTABLE><RESOURCE>")}, 422, "invalid_catalog"),
        ({"job": job_id}, {"catalog": ("broken.fits", b"SIMPLE  =    T" + b" " * 100)}, 422, "invalid_catalog"),
        ({"job": job_id}, {"catalog": ("empty.csv", b"")}, 422, "invalid_catalog"),
        ({"job": job_id}, {"catalog": ("header.csv", b"ra,dec\n")}, 422, "invalid_catalog"),
        ({"job": job_id}, {"catalog": ("notes.txt", b"ra dec\n1 2\n")}, 415, "unsupported_catalog"),
        ({"job": job_id}, {"catalog": ("pole.vot", as_bytes(north_of_the_pole, "votable"))}, 422, "invalid_positions"),
        ({"job": job_id}, {"catalog": ("metres.ecsv", as_bytes(in_metres, "ascii.ecsv"))}, 422, "invalid_positions"),
        ({"job": job_id}, {"catalog": ("words.csv", b"ra,dec\nhere,there\n")}, 422, "invalid_positions"),
        ({"job": job_id}, {"catalog": ("far.vot", as_bytes(far, "votable"))}, 422, "catalog_outside_image"),
        ({"job": job_id}, {"other": good}, 400, "missing_catalog"),
        ({}, {"catalog": good}, 400, "invalid_jobs"),
        ({"job": "no-such-job"}, {"catalog": good}, 404, "job_not_found"),
        ({"job": job_id, "radius_arcsec": "wide"}, {"catalog": good}, 400, "invalid_radius"),
        ({"job": job_id, "radius_arcsec": "-2"}, {"catalog": good}, 400, "invalid_radius"),
        ({"job": job_id, "kind": "blobs"}, {"catalog": good}, 400, "invalid_kind"),
    ):
        reply = client.post(f"{API}/compare/catalog", data=fields, files=files)
        assert reply.status_code == status and reply.json()["error"] == code, (fields, files.keys(), reply.text)
    missing = client.post(f"{API}/compare/catalog", data={"job": job_id},
                          files={"catalog": ("names.csv", b"name,flux\nA,1\n")}).json()  # fmt: skip
    assert missing["details"] == {"missing": ["right ascension", "declination"], "columns": ["name", "flux"]}
    assert "found no right ascension and no declination column" in missing["status"]
    assert "name, flux" in missing["status"]
    as_json = client.post(f"{API}/compare/catalog", json={"job": job_id})
    assert as_json.status_code == 415 and as_json.json()["error"] == "unsupported_media_type"
    assert client.get(f"{API}/comparisons").json() == []
    folder = settings.home / "comparisons"
    assert not folder.exists() or not any(folder.rglob("*.*")), list(folder.rglob("*"))


def test_a_catalog_comparison_is_made_once_per_idempotency_key(client, sky):
    from tests.conftest import published_catalog

    job_id = finished_job(client, upload_file(client, sky[0]))
    catalog = {"catalog": ("nvss.vot", as_bytes(published_catalog(sky[0], sky[1])[0], "votable"))}
    headers = {"Idempotency-Key": "compare-nvss-1"}
    first = client.post(f"{API}/compare/catalog", data={"job": job_id}, files=catalog, headers=headers)
    again = client.post(f"{API}/compare/catalog", data={"job": job_id}, files=catalog, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    other = client.post(f"{API}/compare/catalog", data={"job": job_id, "radius_arcsec": "2"}, files=catalog,
                        headers=headers)  # fmt: skip
    assert other.status_code == 422 and other.json()["error"] == "idempotency_key_reused"
    assert client.get(f"{API}/comparisons").headers["x-total-count"] == "1"


HTML = {"accept": "text/html"}


def test_comparison_pages_make_show_and_delete_comparisons(client, sky, image):
    import re

    from appliance.compare import COLOURS

    file_uuid = upload_file(client, sky[0])
    a = finished_job(client, file_uuid, "sep")
    b = finished_job(client, file_uuid, "sep", seedthr=6.0)
    elsewhere = finished_job(client, upload_file(client, image))
    assert f'href="/comparisons?a={a}"' in client.get(f"/jobs/{a}", headers=HTML).text  # from the job page
    listing = client.get("/comparisons", headers=HTML).text
    assert 'href="/comparisons" aria-current="page"' in listing and "No comparisons yet." in listing
    chosen = client.get("/comparisons", params={"a": a}, headers=HTML).text
    assert f'<option value="{a}" selected>' in chosen
    b_choices = re.search(r'<select id="cmp-job-b".*?</select>', chosen, re.S).group(0)
    assert f'value="{b}"' in b_choices and f'value="{elsewhere}"' not in b_choices and f'value="{a}"' not in b_choices

    made = client.post("/comparisons", files={"catalog": ("", b"")}, data={"job": a, "job_b": b, "radius_arcsec": ""},
                       follow_redirects=False)  # fmt: skip
    assert made.status_code == 303, made.text
    compare_id = made.headers["location"].rsplit("/", 1)[1]
    assert client.get(f"{API}/compare/{compare_id}").json()["jobs"] == [a, b]
    shown = client.get(f"/comparisons/{compare_id}", headers=HTML).text
    assert re.search(r'data-count="matched">20<', shown) and re.search(r'data-count="only_a">0<', shown)
    for colour in COLOURS.values():  # the legend in the viewer's colours
        assert f"--colour: {colour}" in shown
    assert f'data-comparison="/caesar/api/v1.0/compare/{compare_id}/table?format=json"' in shown
    assert 'name="layer"' in shown and f"/files/{file_uuid}/view.fits" in shown  # the image, with its controls
    assert f'src="/caesar/api/v1.0/compare/{compare_id}/plot"' in shown
    assert shown.count('<tr data-class="matched"') == 20
    for text in (shown, chosen):
        assert not re.search(r"(src|href)=\"(https?:)?//", text), "a page loads from outside"
    rows = client.get(f"{API}/compare/{compare_id}/table", params={"format": "json"}).json()["sources"]
    assert len(rows) == 20 and {row["class"] for row in rows} == {"matched"} and "ra" in rows[0]
    assert client.get(f"/comparisons/{compare_id}/table", params={"class": "only_b"}).text.count("<tr data-") == 0
    listing = client.get("/comparisons", headers=HTML).text
    assert f'href="/comparisons/{compare_id}"' in listing and f"sep {b[:8]}" in listing and "sky.fits" in listing

    # refusals come back on the page, beside the form
    for data, files, status, says in (
        ({"job": a, "job_b": ""}, {"catalog": ("", b"")}, 400, "choose job B, or a catalog file"),
        ({"job": a, "job_b": elsewhere}, {"catalog": ("", b"")}, 422, "different images"),
        ({"job": a, "job_b": ""}, {"catalog": ("names.csv", b"name\nA\n")}, 422, "found no right ascension"),
    ):
        refused = client.post("/comparisons", data=data, files=files, headers=HTML)
        assert refused.status_code == status and says in refused.text and 'id="compare-error"' in refused.text
    assert client.get(f"{API}/comparisons").headers["x-total-count"] == "1"

    # deleting: a confirmation page without a script, the list's fragment with htmx
    confirm = client.get(f"/comparisons/{compare_id}/delete", headers=HTML).text
    assert f'action="/comparisons/{compare_id}/delete"' in confirm and "The jobs keep their catalogs" in confirm
    assert f'hx-confirm="Delete comparison {compare_id[:8]}' in listing
    fragment = client.post(f"/comparisons/{compare_id}/delete", headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and f"Comparison {compare_id[:8]} deleted." in fragment.text
    assert "No comparisons yet." in fragment.text and "<h1>" not in fragment.text
    assert client.get(f"{API}/compare/{compare_id}").status_code == 404
    again = client.post(f"/comparisons/{compare_id}/delete", headers=HTML)
    assert again.status_code == 404 and "not found" in again.text
    with_plain_form = client.post("/comparisons", data={"job": a, "job_b": b}, files={"catalog": ("", b"")},
                                  follow_redirects=False).headers["location"]  # fmt: skip
    assert client.post(f"{with_plain_form}/delete", follow_redirects=False).status_code == 303
    assert client.get(f"{API}/comparisons").json() == []
    assert not any((client.appliance.settings.home / "comparisons").rglob("*.vot"))


def test_catalog_columns_are_found_and_read_in_their_units():
    from astropy import units as u

    from appliance.errors import InvalidContent
    from appliance.uploaded_catalogs import read_catalog

    survey = Table({"Name": ["J1", "J2"], "RAJ2000": [10.0, 10.5], "DEdeg": [-30.0, -29.5], "Speak": [2.0, 4.0],
                    "Total_flux_mJy": [1.5, 3.0]})  # fmt: skip
    survey["RAJ2000"].unit, survey["Speak"].unit = u.hour, u.mJy / u.beam  # VizieR's RA in hours of time
    read = read_catalog("survey.vot", as_bytes(survey, "votable"))
    assert read.columns == {"ra": "RAJ2000", "dec": "DEdeg", "flux": "Total_flux_mJy"}  # integrated before peak
    np.testing.assert_allclose(read.table["ra"], [150.0, 157.5])
    np.testing.assert_allclose(read.table["int_flux"], [1.5e-3, 3e-3])
    peak_only = survey["RAJ2000", "DEdeg", "Speak"]
    np.testing.assert_allclose(read_catalog("peak.vot", as_bytes(peak_only, "votable")).table["int_flux"], [2e-3, 4e-3])
    spelled = Table({"RA": [150.0], "DEC": [-30.0]})
    spelled["RA"].unit = spelled["DEC"].unit = "degrees"  # not a VOUnit, but what people write
    with pytest.warns(Warning, match="degrees"):
        spelled_bytes = as_bytes(spelled, "votable")
    assert read_catalog("spelled.vot", spelled_bytes).table["ra"][0] == pytest.approx(150.0)
    by_ucd = Table({"alpha_x": [150.0], "delta_x": [-30.0], "ra": [1.0], "dec": [2.0]})
    by_ucd["alpha_x"].meta["ucd"], by_ucd["delta_x"].meta["ucd"] = "pos.eq.ra;meta.main", "pos.eq.dec;meta.main"
    assert read_catalog("ucd.vot", as_bytes(by_ucd, "votable")).columns["ra"] == "alpha_x"
    for name, content in (("blank.csv", b"ra,dec\n10:00:00,-30:00:00\n,-30:00:00\n"),
                          ("gap.csv", b"ra,dec\n150,-30\n150.1,\n")):  # fmt: skip
        with pytest.raises(InvalidContent, match=r"1 row\(s\) have no valid position .*\(rows 2\)"):
            read_catalog(name, content)


def test_a_finder_against_caesar_on_a_real_field(client, shared_data):
    """sep on the real SCORPIO S17 field (a 4-axis NCP cube) against caesar's own components of it, sent as the CSV
    a user would make of caesar's table: first with caesar's column names, refused with what is missing, then with
    plain ones."""
    import csv

    lines = (shared_data / "caesar-runs" / "scorpio-s17" / "catalog_fitcomp.dat").read_text().splitlines()
    names = next(line for line in lines if line.startswith("# name\t"))[2:].split("\t")
    rows = [dict(zip(names, line.split("\t"), strict=False)) for line in lines if line and not line.startswith("#")]

    def as_csv(columns):
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(columns.values())
        writer.writerows([row[name] for name in columns] for row in rows)
        return text.getvalue().encode()

    job_id = finished_job(client, upload_file(client, shared_data / "ScorpioS17Field.fits"))
    raw = as_csv({"name": "name", "x_wcs(deg)": "x_wcs(deg)", "y_wcs(deg)": "y_wcs(deg)", "S(Jy)": "S(Jy)"})
    refused = client.post(f"{API}/compare/catalog", data={"job": job_id}, files={"catalog": ("caesar.csv", raw)})
    assert refused.status_code == 422 and refused.json()["error"] == "no_positions"
    assert refused.json()["details"]["columns"] == ["name", "x_wcs(deg)", "y_wcs(deg)", "S(Jy)"]
    plain = as_csv({"name": "name", "x_wcs(deg)": "RA (deg)", "y_wcs(deg)": "Dec (deg)", "S(Jy)": "S (Jy)"})
    reply = client.post(f"{API}/compare/catalog", data={"job": job_id}, files={"catalog": ("caesar.csv", plain)})
    assert reply.status_code == 201, reply.text
    result = reply.json()
    counts, components = result["counts"], len(client.get(f"{API}/job/{job_id}/source-components").json()["sources"])
    # caesar found every one of its components on this image: none may fall off it through the cube's NCP WCS
    assert result["catalog"]["outside_image"] == 0 and counts["matched"] + counts["only_b"] == len(rows)
    assert counts["matched"] + counts["only_a"] == components
    # on this Galactic-plane field the finders split the emission differently (reference/finders.md), but the
    # sources both find are the same ones, within a pixel (1.5")
    assert counts["matched"] >= 20 and result["offset_arcsec"]["median"] < 1.5
