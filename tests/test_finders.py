"""Aegean and PyBDSF through the job API, with the real finders: against the truth of a synthetic sky, against the
same finder run by hand, on the real ATCA images, and every product readable by the tools astronomers use."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.io.votable import parse_single_table
from astropy.table import Table

from appliance.testing import score_against_truth
from tests.conftest import API, upload_file, wait_for_job

pytestmark = pytest.mark.e2e  # real finder runs

BEAM_ARCSEC = 6.5


def run_job(client, image, app, job_inputs=None, tag=None):
    file_uuid = upload_file(client, image)
    reply = client.post(
        f"{API}/job", json={"app": app, "job_inputs": job_inputs or {}, "data_inputs": file_uuid, "tag": tag}
    )
    assert reply.status_code == 202, reply.text
    job_id = reply.json()["job_id"]
    status = wait_for_job(client, job_id)
    assert status["state"] == "SUCCESS", client.get(f"{API}/job/{job_id}/log").text[-3000:]
    return job_id, status


def components(client, job_id) -> Table:
    return Table.read(io.BytesIO(client.get(f"{API}/job/{job_id}/catalog", params={"format": "fits"}).content))


@pytest.mark.parametrize("app", ["aegean", "pybdsf", "sep"])
def test_synthetic_sky_against_truth(client, sky, app):
    image, truth = sky
    job_id, status = run_job(client, image, app, {} if app == "sep" else {"ncores": 2})
    found = components(client, job_id)
    figures = score_against_truth(found, truth, BEAM_ARCSEC)
    print(
        f"\n{app} on the 256² synthetic sky (20 sources, SNR 8-200): "
        + ", ".join(f"{k} {v:.3f}" for k, v in figures.items() if k != "detections")
        + f", {status['elapsed_time']:.1f} s"
    )
    assert figures["completeness"] == 1.0
    assert figures["reliability"] == 1.0
    assert 0.95 < figures["flux_ratio"] < 1.08
    assert 0.95 < figures["peak_ratio"] < 1.05
    assert figures["offset_arcsec"] < 0.5
    for column, unit in (("ra", "deg"), ("int_flux", "Jy"), ("peak_flux", "Jy / beam"), ("major", "arcsec")):
        assert found[column].unit == u.Unit(unit)
    assert (found["major"] >= found["minor"]).all()
    for column in ("ra", "dec"):  # double precision from the finder on: float32 steps are 0.1" at RA 257 deg
        assert found[column].dtype.itemsize == 8 and np.any(found[column] != found[column].astype(np.float32))
    if app == "sep":  # isophotal moments above the flood level: smaller than the fitted FWHM
        assert 0.6 < np.median(found["major"]) / 6.5 < 1.0
    else:
        assert np.all(np.abs(found["major"] - 6.5) < 1.5)
    # pixel positions are 0-based and agree with the truth
    nearest = [np.argmin(np.hypot(found["x"] - x, found["y"] - y)) for x, y in zip(truth["x"], truth["y"], strict=True)]
    assert np.median(np.hypot(found["x"][nearest] - truth["x"], found["y"][nearest] - truth["y"])) < 0.3


def test_every_product_is_readable(client, sky):
    image, truth = sky
    job_id, _ = run_job(client, image, "aegean", {"ncores": 2}, tag="products")
    votable = parse_single_table(io.BytesIO(client.get(f"{API}/job/{job_id}/catalog").content))
    ucds = {field.name: field.ucd for field in votable.fields}
    assert ucds["ra"] == "pos.eq.ra;meta.main" and ucds["int_flux"] == "phot.flux.density"
    n = len(votable.array)
    assert n == 20
    for fmt in ("fits", "csv", "ascii", "votable"):
        for kind in ("islands", "components"):
            reply = client.get(f"{API}/job/{job_id}/catalog", params={"kind": kind, "format": fmt})
            assert reply.status_code == 200, (fmt, kind)
    csv = Table.read(client.get(f"{API}/job/{job_id}/catalog", params={"format": "csv"}).text, format="ascii.csv")
    assert len(csv) == n and "peak_flux_err" in csv.colnames
    sources = client.get(f"{API}/job/{job_id}/sources").json()
    assert len(sources["sources"]) == 20 and {c["name"] for c in sources["columns"]} >= {"island_id", "ra", "npix"}
    components_json = client.get(f"{API}/job/{job_id}/source-components").json()
    assert len(components_json["sources"]) == n and components_json["sources"][0]["app"] == "aegean"
    ascii_table = client.get(f"{API}/job/{job_id}/output-components")
    assert ascii_table.status_code == 200 and ascii_table.text.startswith("# component_id")
    assert client.get(f"{API}/job/{job_id}/output-sources").text.startswith("# island_id")

    from regions import Regions

    for fmt in ("ds9", "crtf"):
        text = client.get(f"{API}/job/{job_id}/regions", params={"format": fmt}).text
        parsed = Regions.parse(text, format=fmt)
        assert len(parsed) == n
    ellipse = Regions.parse(client.get(f"{API}/job/{job_id}/regions").text, format="ds9")[0]
    assert ellipse.width.to_value(u.arcsec) == pytest.approx(votable.array["major"][0], rel=1e-3)

    png = base64.b64decode(client.get(f"{API}/job/{job_id}/preview").json()["image"])
    assert png.startswith(b"\x89PNG") and client.get(f"{API}/job/{job_id}/output-plot").content == png

    tarball = tarfile.open(fileobj=io.BytesIO(client.get(f"{API}/job/{job_id}/output").content))
    names = {m.name.split("/", 1)[1] for m in tarball.getmembers()}
    assert {
        "job.log",
        "job.json",
        "catalog_components.vot",
        "aegean_comp.vot",
        "overlay.png",
        "catalog_residual.fits",
    } <= names
    assert "input.fits" not in names and all(m.name.startswith(f"job_{job_id}/") for m in tarball.getmembers())

    # the residual image: the Gaussians are gone, the noise is left
    residual = fits.getdata(io.BytesIO(client.get(f"{API}/job/{job_id}/files/catalog_residual.fits").content))
    data = fits.getdata(image)
    at = (np.rint(truth["y"]).astype(int), np.rint(truth["x"]).astype(int))
    noise = np.std(data[:20, :20])
    assert np.all(np.abs(residual[at]) < np.maximum(0.05 * data[at], 4 * noise))
    assert np.std(residual) < 1.3 * noise < np.std(data)
    listed = {f["name"] for f in client.get(f"{API}/job/{job_id}/files").json()}
    assert names <= listed
    assert client.get(f"{API}/job/{job_id}/files/job.json").json()["state"] == "SUCCESS"
    assert client.get(f"{API}/job/{job_id}/files/..%2Fjob.json").status_code == 404
    log = client.get(f"{API}/job/{job_id}/log")
    assert "BANE" in log.text and "SUCCESS" in log.text
    tail = client.get(f"{API}/job/{job_id}/log", params={"offset": int(log.headers["x-log-size"]) - 20})
    assert log.text.endswith(tail.text) and len(tail.text) == 20


def test_aegean_catalog_equals_aegean_run_by_hand(client, sky, tmp_path):
    image, _ = sky
    options = {"seedthr": 6.0, "mergethr": 3.0, "bkgbox": 60, "bkggrid": 12, "fit-maxcomponents": 2}
    job_id, _ = run_job(client, image, "aegean", options)
    appliance = components(client, job_id)

    by_hand = tmp_path / "sky.fits"
    by_hand.write_bytes(image.read_bytes())
    scripts = {name: str(Path_of(name)) for name in ("BANE", "aegean")}
    subprocess.run(
        [scripts["BANE"], "--cores", "1", "--grid", "12", "12", "--box", "60", "60", "sky.fits"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            scripts["aegean"],
            "--autoload",
            "--cores",
            "1",
            "--island",
            "--seedclip",
            "6.0",
            "--floodclip",
            "3.0",
            "--maxsummits",
            "2",
            "--table",
            "hand.vot",
            "sky.fits",
        ],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    hand = Table.read(tmp_path / "hand_comp.vot")
    assert len(appliance) == len(hand) > 0
    for ours, theirs in (
        ("ra", "ra"),
        ("dec", "dec"),
        ("peak_flux", "peak_flux"),
        ("int_flux", "int_flux"),
        ("major", "a"),
        ("pa", "pa"),
        ("local_rms", "local_rms"),
    ):
        np.testing.assert_allclose(appliance[ours], hand[theirs], rtol=1e-6, err_msg=ours)


def test_pybdsf_catalog_equals_pybdsf_run_by_hand(client, sky, tmp_path):
    image, _ = sky
    job_id, _ = run_job(client, image, "pybdsf", {"seedthr": 6.0, "mergethr": 3.5, "bkgbox": 60, "bkggrid": 20})
    appliance = components(client, job_id)
    by_hand = tmp_path / "sky.fits"
    by_hand.write_bytes(image.read_bytes())
    code = (
        "import bdsf; img = bdsf.process_image('sky.fits', thresh='hard', thresh_pix=6.0, thresh_isl=3.5, "
        "rms_box=(60, 20), frequency=1.4e9, quiet=True, ncores=1); "
        "img.write_catalog(outfile='hand.fits', format='fits', catalog_type='gaul'); "
        "print(img.nisl, sum(i.total_flux for i in img.islands))"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, capture_output=True, text=True)
    hand = Table.read(tmp_path / "hand.fits")
    assert len(appliance) == len(hand) > 0
    islands = Table.read(io.BytesIO(client.get(f"{API}/job/{job_id}/catalog", params={"kind": "islands"}).content))
    n_islands, island_flux = run.stdout.split()[-2:]
    assert len(islands) == int(n_islands)
    assert np.sum(islands["int_flux"]) == pytest.approx(float(island_flux), rel=1e-6)
    for ours, theirs, scale in (
        ("ra", "RA", 1),
        ("dec", "DEC", 1),
        ("peak_flux", "Peak_flux", 1),
        ("int_flux", "Total_flux", 1),
        ("major", "Maj", 3600),
        ("pa", "PA", 1),
    ):
        np.testing.assert_allclose(appliance[ours], np.asarray(hand[theirs]) * scale, rtol=1e-6, err_msg=ours)


def Path_of(script: str):
    from pathlib import Path

    return Path(sys.executable).parent / script


@pytest.mark.parametrize(
    ("app", "image", "least"),
    [("aegean", "ScorpioS17Field.fits", 30), ("pybdsf", "ScorpioExtendedSourceField.fits", 15)],
)
def test_real_atca_images(client, shared_data, app, image, least):
    """Real 4-axis NCP headers without BPA: the job runs, says what it assumed, and finds sources on the sky."""
    job_id, status = run_job(client, shared_data / image, app, {"ncores": 2})
    found = components(client, job_id)
    print(f"\n{app} on {image}: {len(found)} components, {status['elapsed_time']:.1f} s")
    assert len(found) >= least
    # centred on the image's data: what a finder puts beyond the edge is left out, and the log says so
    rows, cols = np.squeeze(fits.getdata(shared_data / image)).shape
    x, y = np.rint(found["x"]), np.rint(found["y"])
    assert np.all((x >= 0) & (x < cols) & (y >= 0) & (y < rows)) and (found["appliance_flags"] == 0).all()
    assert np.isfinite(found["int_flux"]).all() and (found["peak_flux"] > 0).all()
    log = client.get(f"{API}/job/{job_id}/log").text
    islands = Table.read(io.BytesIO(client.get(f"{API}/job/{job_id}/catalog", params={"kind": "islands"}).content))
    assert len(islands) > 0 and np.isin(found["island_id"], islands["island_id"]).all()
    if app == "pybdsf":  # islands are PyBDSF's islands, not its sources, nor only the islands it fitted
        reported = int(re.search(r"pybdsf: (\d+) islands", log).group(1))
        assert len(islands) == reported and len(np.unique(found["island_id"])) <= reported
        by_island = {i: int(np.sum(found["island_id"] == i)) for i in islands["island_id"]}
        assert list(islands["n_components"]) == list(by_island.values())
    assert "no BPA in the header: a beam position angle of 0 deg is assumed" in log
    assert "projection given to the finder: SIN with PV2_1, PV2_2, the equivalent of the header's NCP" in log
    spec = client.get(f"{API}/job/{job_id}/files/job.json").json()
    assert spec["filename_orig"] == image and spec["state"] == "SUCCESS"
    # a component sits on the brightest pixel of the image (fluxes are checked on the synthetic sky: on these
    # fields the brightest source is extended and each finder splits it differently)
    data = np.squeeze(fits.getdata(shared_data / image))
    y, x = np.unravel_index(np.nanargmax(data), data.shape)
    distance = np.hypot(found["x"] - x, found["y"] - y)
    assert distance.min() < 4.3  # one beam
    json.dumps(client.get(f"{API}/job/{job_id}/sources").json())
