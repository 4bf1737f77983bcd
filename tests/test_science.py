"""Science checks: every finder that runs here, on a harder injected-truth sky (faint sources down to 3 sigma),
scored against the truth; figures printed, sane floors asserted."""

from __future__ import annotations

import io

import pytest
from astropy.table import Table

from appliance.testing import make_sky, score_against_truth
from tests.conftest import API, upload_file, wait_for_job

pytestmark = pytest.mark.e2e  # real finder runs

BEAM_ARCSEC = 6.5
INPUTS = {"aegean": {"ncores": 2}, "pybdsf": {"ncores": 2}, "sep": {}}


@pytest.fixture(scope="module")
def faint_sky(tmp_path_factory):
    path = tmp_path_factory.mktemp("faint") / "faint.fits"
    truth = make_sky(path, size=512, n_sources=100, snr_range=(3.0, 300.0), snr_slope=-2.0, seed=11)
    return path, truth


@pytest.mark.parametrize("app", list(INPUTS))
def test_finder_on_a_sky_with_faint_sources(client, faint_sky, app):
    image, truth = faint_sky
    reply = client.post(f"{API}/job", json={"app": app, "job_inputs": INPUTS[app],
                                             "data_inputs": upload_file(client, image)})  # fmt: skip
    status = wait_for_job(client, reply.json()["job_id"])
    assert status["state"] == "SUCCESS"
    found = Table.read(io.BytesIO(client.get(f"{API}/job/{status['job_id']}/catalog", params={"format": "fits"})
                                  .content))  # fmt: skip
    figures = score_against_truth(found, truth, BEAM_ARCSEC)
    n_bright = int((truth["snr"] >= 5).sum())
    print(f"\n{app} on 512² with 100 sources (SNR 3-300, {n_bright} at SNR >= 5): "
          + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()))  # fmt: skip
    assert figures["completeness"] >= 0.85
    assert figures["reliability"] >= 0.95
    assert 0.9 < figures["flux_ratio"] < 1.1
    assert 0.9 < figures["peak_ratio"] < 1.1
