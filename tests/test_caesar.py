"""caesar: caesar-rest's 156 options enforced, the config FindSource reads, and caesar's real outputs parsed."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from astropy.io import ascii as astropy_ascii
from astropy.io import fits
from astropy.table import Table

from appliance.apps.caesar import Caesar, read_caesar_catalogs
from appliance.fitsimage import celestial_wcs
from tests.conftest import (
    API,
    angle_difference,
    make_settings,
    sky_ellipse_the_long_way,
    upload_file,
    write_image,
)

CATEGORY_COUNTS = {
    "OUTPUT": 10, "IMGREAD": 5, "IMGSTATS": 1, "IMGBKG": 12, "COMPACT-SOURCES": 76, "IMGRES": 8, "IMGSMOOTH": 4,
    "EXTENDED-SOURCES": 30, "RUN": 10,
}  # fmt: skip


def parse_config(text: str) -> dict[str, str]:
    """FindSource's reading of a config: 'key = value', '#' '/' '*' and indented lines skipped."""
    values = {}
    for line in text.splitlines():
        tokens = line.split()
        if len(tokens) >= 3 and tokens[1] == "=" and line[:1] not in "#/* \t":
            values[tokens[0]] = tokens[2]
    return values


def same_value(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)
    except ValueError:
        return a == b


def test_all_156_caesar_rest_options_with_their_categories():
    described = Caesar().describe()
    assert described.pop("drop_outside")["category"] == "CATALOG"  # the appliance's own, for every finder
    assert len(described) == 156
    counts: dict[str, int] = {}
    for option in described.values():
        counts[option["category"]] = counts.get(option["category"], 0) + 1
    assert counts == CATEGORY_COUNTS
    assert described["bkgestimator"]["allowed_values"] == ["Mean", "Median", "BiWeight", "ClippedMedian"]
    assert described["bkgestimator"]["default"] == "Median" and described["bkgestimator"]["enum"] is True
    assert (described["fit-maxcomponents"]["default"], described["fit-maxcomponents"]["min"],
            described["fit-maxcomponents"]["max"]) == (3, 0, 100)  # fmt: skip
    assert described["fitsources"]["type"] == "none" and described["fit-fcntol"]["advanced"] == 1
    assert described["nested-blobpeakzthr"]["subcategory"] == "NESTED-SOURCES"


def test_default_config_is_caesar_rests_with_our_file_names():
    text = Caesar().config_text(Caesar.schema.validate({}))
    assert text.endswith("\n") and "=\n" not in text
    config = parse_config(text)
    assert len(config) == len(text.splitlines())  # every line is read, none twice
    expected = {
        "inputFile": "input.fits", "outputCatalogFile": "catalog.dat", "saveDS9Region": "true",
        "saveCatalogFileInJson": "true", "seedThr": "5", "mergeThr": "2.6", "compactSourceSearchNIters": "1",
        "fitSources": "false", "useLocalBkg": "true", "bkgEstimator": "2", "boxSizeX": "20", "boxSizeY": "20",
        "fitFcnTolerance": "1.e-2", "nThreads": "1", "beamBmin": "5", "beamFWHM": "5", "logLevel": "INFO",
    }  # fmt: skip
    for key, value in expected.items():
        assert config[key] == value, key
    assert {v for k, v in config.items() if k.startswith(("save", "use", "fit")) and v in ("True", "False")} == set()


def test_options_write_their_keys():
    options = Caesar.schema.validate(
        {"bkgbox": 30.0, "bkgestimator": "BiWeight", "fitsources": True, "globalbkg": True, "tilestep": 0.5,
         "fit-minimizeralgo": "migrad", "nthreads": 2}
    )  # fmt: skip
    config = parse_config(Caesar().config_text(options))
    assert (config["boxSizeX"], config["boxSizeY"]) == ("30.0", "30.0")
    assert config["bkgEstimator"] == "3" and config["fitSources"] == "true" and config["useLocalBkg"] == "false"
    assert config["tileStepSizeX"] == "0.5" and config["useTileOverlap"] == "true"
    assert config["fitMinimizerAlgo"] == "migrad" and config["nThreads"] == "2"


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"smoothfilter": "GAUSSIAN"}, "smoothfilter"),  # FindSource drops both codes
        ({"res-removedsourcetype": "ALL"}, "res-removedsourcetype"),
        ({"bkggrid": 1.0}, "bkggrid"),  # the open range (0, 1) excludes 1
        ({"bpa": 180.0}, "bpa"),
        ({"fit-peakmultiplicitythr": -1}, "fit-peakmultiplicitythr"),
        ({"seedthr": 2.0}, "mergethr"),
        ({"npixmin": "5"}, "npixmin"),
    ],
)
def test_values_caesar_would_silently_ignore_are_refused(given, named):
    from appliance.errors import InvalidOptions

    with pytest.raises(InvalidOptions) as caught:
        Caesar().check_input({"celestial_wcs": True}, Caesar.schema.validate(given))
    assert named in caught.value.problems
    if named in given and named != "npixmin":
        assert "caesar ignores" in caught.value.problems[named]


def test_unavailable_without_an_installation_and_submission_refused(client, image):
    body = client.get(f"{API}/apps").json()["details"]["caesar"]
    assert body["available"] is False and "caesar_findsource" in body["reason"] and "CERN ROOT" in body["reason"]
    assert len(client.get(f"{API}/app/caesar/describe").json()) == 156 + 1  # and drop_outside
    reply = client.post(f"{API}/job", json={"app": "caesar", "job_inputs": {"fitsources": True},
                                             "data_inputs": upload_file(client, image)})  # fmt: skip
    assert reply.status_code == 422 and reply.json()["error"] == "app_unavailable"
    assert reply.json()["state"] == "ABORTED"


def test_the_setting_points_at_an_installation_that_runs(tmp_path):
    from appliance.apps import AppRegistry, JobInput

    findsource = tmp_path / "caesar" / "bin" / "FindSource"
    findsource.parent.mkdir(parents=True)
    findsource.write_text("#!/bin/sh\necho 'Usage: FindSource [options]'\n")  # as caesar's: usage, exit 0
    findsource.chmod(0o755)
    settings = make_settings(tmp_path / "home", caesar_findsource=str(findsource))
    caesar = AppRegistry(settings).get("caesar")
    assert caesar.availability().available and caesar.findsource() == findsource

    # MPI: the step says what runs, and Open MPI is allowed to start as root
    job = JobInput(tmp_path / "input.fits", {}, Caesar.schema.validate({"nproc": 2}), tmp_path, tmp_path / "log", 2)
    (step,) = caesar.steps(job)
    assert step.name == "mpirun FindSourceMPI" and step.command[:3] == ["mpirun", "-np", "2"]
    assert step.command[3] == str(findsource.with_name("FindSourceMPI"))
    assert (step.env.get("OMPI_ALLOW_RUN_AS_ROOT") == "1") == (os.geteuid() == 0)

    # a binary that is there but cannot run (no ROOT libraries) is not available, and the reason is said
    time.sleep(0.01)
    findsource.write_text(
        "#!/bin/sh\necho 'FindSource: error while loading shared libraries: libCore.so' >&2\nexit 127\n"
    )
    reason = AppRegistry(settings).get("caesar").availability()
    assert not reason.available and "libCore.so" in reason.reason and "exited with 127" in reason.reason


# the caesar-rest options equivalent to caesar's config.cfg template, the starting point of the reference runs
TEMPLATE_OPTIONS = {
    "activecontour": "LRAC", "selectsources": True, "compactsearchiters": 10, "fit-improveerrors": True,
    "fit-fcntol": 1e-5, "fit-maxniters": 100000, "fit-nretries": 1000, "fit-printlevel": 1,
    "fit-scaledatatomax": True, "fit-thetalimit": 5.0, "fit-estimatedbkg": True, "fit-usethreads": True,
    "prefit-freepos": True, "nested-maxmotherpixmatch": 0.01, "mergeedgesources": True,
    "nested-minmotherdist": 10, "nthreads": -1, "fit-peakshifttol": 1, "res-pssubtractionmethod": "FITMODEL",
    "res-removenested": True, "saliency-usebkgmap": True, "saliency-usermsmap": True, "save-inputmap": True,
    "save-residualmap": True, "save-segmentedmap": True, "seedthrstep": 1.0, "bkgskipoutliers": True,
    "nested-sourcetobeamthr": 0.0, "tilesize": 1000, "no-circratiocut": True, "no-elongationcut": True,
    "fitsources": True,
}  # fmt: skip
RUN_OPTIONS = {"synthetic-512": {}, "scorpio-s17": {"no-nestedsearch": True},
               "scorpio-extended": {}}  # fmt: skip
# keys no option sets, or that FindSource reads without using
NOT_OPTIONS = {"beamFWHM"} | {"inputFile", "outputFile", "outputCatalogFile", "outputComponentCatalogFile",
                              "ds9RegionFile", "ds9FitRegionFile", "bkgMapFITSFile", "noiseMapFITSFile",
                              "significanceMapFITSFile", "residualMapFITSFile", "inputMapFITSFile",
                              "saliencyMapFITSFile"}  # fmt: skip


@pytest.mark.parametrize("run", list(RUN_OPTIONS))
def test_config_reproduces_the_reference_runs(shared_data, run):
    reference = parse_config((shared_data / "caesar-runs" / run / "config.cfg").read_text())
    ours = parse_config(Caesar().config_text(Caesar.schema.validate({**TEMPLATE_OPTIONS, **RUN_OPTIONS[run]})))
    compared = [key for key in ours if key in reference and key not in NOT_OPTIONS]
    assert len(compared) > 150
    different = {key: (ours[key], reference[key]) for key in compared if not same_value(ours[key], reference[key])}
    assert different == {}


RUNS = {  # image, islands, nested sources, components
    "synthetic-512": ("caesar-runs/synthetic-512/input.fits", 30, 0, 30),
    "scorpio-s17": ("ScorpioS17Field.fits", 207, 0, 192),
    "scorpio-extended": ("ScorpioExtendedSourceField.fits", 162, 54, 183),
}


def read_dat(path) -> Table:
    """caesar's ASCII catalog: tab-separated, its column names on the last '#' line before the data."""
    lines = path.read_text().splitlines()
    header = [n for n in [line for line in lines if line.startswith("# name\t")][0][2:].split("\t") if n.strip()]
    return astropy_ascii.read([line for line in lines if not line.startswith("#")], names=header,
                              format="no_header", delimiter="\t")  # fmt: skip


@pytest.mark.parametrize("run", list(RUNS))
def test_real_caesar_outputs_parse_to_caesars_own_numbers(shared_data, run):
    image_path, n_islands, n_nested, n_components = RUNS[run]
    folder = shared_data / "caesar-runs" / run
    catalog = read_caesar_catalogs(folder, shared_data / image_path)
    sources_dat, components_dat = read_dat(folder / "catalog.dat"), read_dat(folder / "catalog_fitcomp.dat")
    assert (len(catalog.islands), len(catalog.nested), len(catalog.components)) == (n_islands, n_nested, n_components)
    # islands are islands: nested sources (inside an island, its pixels and flux part of it) are their own level
    islands_dat = sources_dat[sources_dat["sourceNestedLevel"] == 0]
    nested_dat = sources_dat[sources_dat["sourceNestedLevel"] > 0]
    assert len(catalog.islands) == len(islands_dat) and len(catalog.components) == len(components_dat)
    nested = catalog.nested
    assert list(nested["name"]) == list(nested_dat["name"]) and (nested["nest_level"] == 1).all()
    parents = dict(zip(catalog.islands["island_id"], catalog.islands["name"], strict=True))
    assert [parents[p] for p in nested["parent_id"]] == [n.split("_N")[0] for n in nested["name"]]
    assert list(nested["npix"]) == list(nested_dat["npix"])

    islands = catalog.islands
    assert list(islands["name"]) == list(islands_dat["name"])
    np.testing.assert_allclose(islands["x"], islands_dat["x"], atol=1e-3)  # .dat rounds to 6 digits
    np.testing.assert_allclose(islands["y"], islands_dat["y"], atol=1e-3)
    np.testing.assert_allclose(islands["ra"], islands_dat["x_wcs(deg)"], atol=0.05 / 3600)
    np.testing.assert_allclose(islands["dec"], islands_dat["y_wcs(deg)"], atol=0.05 / 3600)
    np.testing.assert_allclose(islands["peak_flux"], islands_dat["Smax(Jy/beam)"], rtol=1e-6)
    np.testing.assert_allclose(islands["int_flux"], islands_dat["Stot(Jy/beam)"] / islands_dat["beamArea"],
                               rtol=1e-6)  # fmt: skip
    assert list(islands["npix"]) == list(islands_dat["npix"])
    # an island's components: its own and those of the sources nested in it
    own = dict(zip(sources_dat["name"], sources_dat["nComponents"], strict=True))
    assert list(islands["n_components"]) == [
        sum(count for name, count in own.items() if name == island or name.startswith(f"{island}_N"))
        for island in islands["name"]
    ]

    components = catalog.components
    assert list(components["name"]) == [
        f"{n}_fitcomp{c}" for n, c in zip(components_dat["name"], components_dat["componentId"], strict=True)
    ]
    np.testing.assert_allclose(components["x"], components_dat["x"], atol=1e-3)
    np.testing.assert_allclose(components["y"], components_dat["y"], atol=1e-3)
    np.testing.assert_allclose(components["ra"], components_dat["x_wcs(deg)"], atol=0.05 / 3600)
    np.testing.assert_allclose(components["dec"], components_dat["y_wcs(deg)"], atol=0.05 / 3600)
    np.testing.assert_allclose(components["peak_flux"], components_dat["Speak(Jy/beam)"], rtol=1e-6)
    np.testing.assert_allclose(components["int_flux"], components_dat["S(Jy)"], rtol=1e-6)
    assert list(components["flags"]) == list(components_dat["fitQuality"])
    names = dict(zip(islands["name"], islands["island_id"], strict=True))
    assert list(components["island_id"]) == [names[n.split("_N")[0]] for n in components_dat["name"]]
    # ra_err on the sky: caesar's is in RA degrees
    np.testing.assert_allclose(components["ra_err"] / np.cos(np.deg2rad(components["dec"])),
                               components_dat["x_wcs_err(deg)"] * 3600, rtol=1e-4)  # fmt: skip

    # caesar's DS9 regions are 1-based: each fitted ellipse sits at our 0-based position + 1
    centres = [tuple(map(float, line.split()[1:3])) for line in (folder / "ds9_fitcomp.reg").read_text().splitlines()
               if line.startswith("ellipse")]  # fmt: skip
    np.testing.assert_allclose(np.array(centres), np.column_stack([components["x"], components["y"]]) + 1, atol=1e-3)


def test_position_angles_are_east_of_north_on_ncp(shared_data):
    """caesar's pa_wcs is a median 88 deg off on this NCP field; ours follows the fitted ellipse, as DS9 draws it."""
    folder = shared_data / "caesar-runs" / "scorpio-s17"
    image = shared_data / "ScorpioS17Field.fits"
    components = read_caesar_catalogs(folder, image).components
    wcs = celestial_wcs(fits.getheader(image))
    # caesar's own DS9 ellipses (1-based image coordinates): the width axis at the given angle from +x
    ellipses = np.array([line.split()[1:6] for line in (folder / "ds9_fitcomp.reg").read_text().splitlines()
                         if line.startswith("ellipse")], dtype=float)  # fmt: skip
    width, height, angle = ellipses[:, 2], ellipses[:, 3], ellipses[:, 4]
    major_angle = np.where(width >= height, angle, angle + 90.0)
    pixel_major = np.maximum(width, height) * 2
    pixel_minor = np.minimum(width, height) * 2
    expected = np.array([sky_ellipse_the_long_way(wcs, *pars) for pars in zip(components["x"], components["y"],
                         pixel_major, pixel_minor, major_angle, strict=True)])  # fmt: skip
    np.testing.assert_allclose(components["major"], expected[:, 0], rtol=2e-3)
    np.testing.assert_allclose(components["minor"], expected[:, 1], rtol=2e-3)
    elongated = np.asarray(components["major"] > 1.2 * components["minor"])
    assert elongated.sum() > 100
    assert np.max(angle_difference(components["pa"], expected[:, 2])[elongated]) < 0.5


def test_position_angles_are_east_of_north_on_azp(tmp_path):
    image = write_image(tmp_path / "azp.fits", shape=(200, 200),
                        header={"CTYPE1": "RA---AZP", "CTYPE2": "DEC--AZP", "PV2_1": 2.0, "CRVAL2": -70.0})  # fmt: skip
    wcs = celestial_wcs(fits.getheader(image))
    rng = np.random.default_rng(3)
    x, y, pa = rng.uniform(20, 180, 20), rng.uniform(20, 180, 20), rng.uniform(-90, 90, 20)
    fitted = [{"name": f"S{n}", "componentId": 1, "x0": float(x[n]), "y0": float(y[n]), "pa": float(pa[n]),
               "x0Err_wcs": 1e-5, "y0Err_wcs": 1e-5, "A": 1e-3, "Aerr": 1e-4, "fluxDensity": 1e-3, "beamArea": 1.0,
               "fluxDensityErr": 1e-4, "bmaj": 6.0, "bmajErr": 0.1, "bmin": 3.0, "bminErr": 0.1, "paErr": 1.0,
               "bkgRMSSum": 1e-4, "bkgSum": 0.0, "nPix": 1, "fitQuality": 3} for n in range(20)]  # fmt: skip
    (tmp_path / "catalog_fitcomp.json").write_text(json.dumps({"components": fitted}))
    components = read_caesar_catalogs(tmp_path, image).components
    # caesar's pa: the major axis from the image's +y axis, anticlockwise
    expected = np.array([sky_ellipse_the_long_way(wcs, x[n], y[n], 6.0, 3.0, pa[n] + 90.0) for n in range(20)])
    assert np.max(angle_difference(components["pa"], expected[:, 2])) < 0.5


def test_caesar_on_the_synthetic_image_finds_the_truth(shared_data):
    folder = shared_data / "caesar-runs" / "synthetic-512"
    catalog = read_caesar_catalogs(folder, folder / "input.fits")
    truth = Table.read(folder / "truth.csv")
    found = catalog.components
    distance = np.hypot(found["x"][:, None] - truth["x"][None, :], found["y"][:, None] - truth["y"][None, :])
    assert (distance.min(axis=0) < 0.5).all()  # every true source within half a pixel
    nearest = distance.argmin(axis=0)
    ratio = np.asarray(found["peak_flux"])[nearest] / truth["peak_jy"]
    assert np.median(np.abs(ratio - 1)) < 0.01
    assert np.median(np.abs(found["major"] - 6.5)) < 0.2  # pixel FWHM x 1.5": the 6.5" beam


def test_images_without_wcs_are_refused_for_caesar(tmp_path):
    from appliance.errors import InvalidContent

    with pytest.raises(InvalidContent):
        Caesar().check_input({"celestial_wcs": False}, Caesar.schema.validate({}))
    assert write_image(tmp_path / "x.fits").exists()


@pytest.mark.parametrize("field", ["ScorpioS17Field", "ScorpioExtendedSourceField"])
def test_caesar_is_given_ncp_as_ncp_and_other_finders_the_equivalent_sin(shared_data, tmp_path, field):
    """caesar's WCS code ignores PV terms: given NCP as astropy writes it (SIN with PV2_1, PV2_2) its own RA/Dec
    come out 85-153" off; given NCP it reads it right (its reference runs on these fields agree with astropy to
    0.05"). The finders that read the WCS with astropy get the equivalent SIN, as before; both place every pixel
    where the upload's header does."""
    from appliance.apps.aegean import Aegean
    from appliance.fitsimage import prepare_image

    source = shared_data / f"{field}.fits"
    original = celestial_wcs(fits.getheader(source))
    y, x = np.mgrid[0:1000:111, 0:1000:111]
    for app, ctype, said in (
        (Caesar(), "RA---NCP", "projection given to the finder: NCP"),
        (Aegean(), "RA---SIN", "projection given to the finder: SIN with PV2_1, PV2_2, the equivalent of the "
                               "header's NCP"),
    ):  # fmt: skip
        dest = tmp_path / f"{app.name}.fits"
        notes = prepare_image(source, 0, dest, beam_fallback=(6.5, 6.5, 0.0), reads_pv_terms=app.reads_pv_terms)
        header = fits.getheader(dest)
        assert header["CTYPE1"] == ctype and header["CTYPE2"] == ctype.replace("RA--", "DEC-")
        assert said in notes
        terms = [key for key in header if key.startswith("PV")]
        assert terms == ([] if app.name == "caesar" else ["PV2_1", "PV2_2"])
        assert (header["CRVAL1"], header["CRVAL2"], header["CRPIX1"], header["CRPIX2"]) == (
            255.449637133 if field == "ScorpioS17Field" else fits.getheader(source)["CRVAL1"],
            fits.getheader(source)["CRVAL2"], fits.getheader(source)["CRPIX1"], fits.getheader(source)["CRPIX2"],
        )  # fmt: skip
        given = celestial_wcs(header)
        assert given.pixel_to_world(x, y).separation(original.pixel_to_world(x, y)).arcsec.max() < 1e-6
    # what caesar would make of the SIN with PV terms: the same pixels 85-153" away
    ignored = celestial_wcs(fits.getheader(tmp_path / "aegean.fits"))
    ignored.wcs.set_pv([])
    ignored.wcs.set()
    assert ignored.pixel_to_world(x, y).separation(original.pixel_to_world(x, y)).arcsec.min() > 60


def test_the_job_log_says_which_projection_caesar_was_given(shared_data, tmp_path):
    """Through a job, with a FindSource that finds nothing: the log says caesar was given NCP."""
    from appliance.testing import make_grid_sky
    from tests.conftest import api_client, wait_for_job

    findsource = tmp_path / "bin" / "FindSource"
    findsource.parent.mkdir()
    findsource.write_text("#!/bin/sh\necho 'Usage: FindSource [options]'\n")
    findsource.chmod(0o755)
    image = tmp_path / "ncp.fits"
    make_grid_sky(image, 200, 100, header={"CTYPE1": "RA---NCP", "CTYPE2": "DEC--NCP", "CRVAL2": -40.0})
    with api_client(make_settings(tmp_path / "home", caesar_findsource=str(findsource))) as client:
        job = client.post(f"{API}/job", json={"app": "caesar", "data_inputs": upload_file(client, image)}).json()
        assert wait_for_job(client, job["job_id"])["state"] == "SUCCESS"
        assert "input: projection given to the finder: NCP\n" in client.get(f"{API}/job/{job['job_id']}/log").text
