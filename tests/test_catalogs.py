"""The normalized catalog: schema, units, UCDs, and ellipse orientation agreeing between region files and picture."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy import units as u
from astropy.table import Table
from astropy.wcs import WCS

from appliance.apps.aegean import Aegean
from appliance.catalogs import (
    COMPONENT_COLUMNS,
    ISLAND_COLUMNS,
    ON_BLANK,
    OUTSIDE_IMAGE,
    Catalog,
    check_footprint,
    component_regions,
    deconvolved,
    iau_names,
    normalized_table,
    pixel_ellipses,
    sky_ellipses,
    write_table,
)
from tests.conftest import angle_difference, sky_ellipse_the_long_way


def sky_wcs(east_left: bool = True) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    wcs.wcs.crval = [150.0, -30.0]
    wcs.wcs.crpix = [51, 51]
    wcs.wcs.cdelt = [(-1 if east_left else 1) * 1.5 / 3600, 1.5 / 3600]
    return wcs


def components(**values):
    base = {
        "component_id": [1],
        "island_id": [1],
        "ra": [150.0],
        "dec": [-30.0],
        "major": [9.0],
        "minor": [3.0],
        "pa": [30.0],
        "peak_flux": [1e-3],
        "int_flux": [2e-3],
    }
    return normalized_table("components", "test", {**base, **values}, sky_wcs())


def test_every_column_with_unit_and_ucd_in_order():
    table = components()
    assert table.colnames == [c[0] for c in COMPONENT_COLUMNS]
    assert table["ra"].unit == u.deg and table["int_flux"].unit == u.Jy and table["major"].unit == u.arcsec
    assert table["peak_flux"].unit == u.Jy / u.beam and table["x"].unit == u.pix
    assert all(table[name].meta["ucd"] == ucd for name, _, ucd, _ in COMPONENT_COLUMNS)
    assert np.isnan(table["ra_err"][0]) and table["flags"][0] == 0 and table["app"][0] == "test"
    assert table["x"][0] == pytest.approx(50.0) and table["y"][0] == pytest.approx(50.0)  # 0-based
    empty = normalized_table("islands", "test", {})
    assert len(empty) == 0 and empty.colnames == [c[0] for c in ISLAND_COLUMNS]


def test_json_has_no_nan_and_round_trips(tmp_path):
    table = components()
    write_table(table, tmp_path / "c.json", "json")
    document = json.loads((tmp_path / "c.json").read_text())
    assert document["sources"][0]["ra_err"] is None and document["sources"][0]["pa"] == 30.0
    assert {
        "name": "ra",
        "unit": "deg",
        "ucd": "pos.eq.ra;meta.main",
        "description": "right ascension (ICRS)",
    } in document["columns"]
    write_table(table, tmp_path / "c.vot", "votable")
    assert Table.read(tmp_path / "c.vot")["int_flux"].unit == u.Jy


@pytest.mark.parametrize(("east_left", "expected"), [(True, 120.0), (False, 60.0)])
def test_ellipse_orientation_is_the_same_in_regions_and_picture(east_left, expected):
    """PA 30 deg east of north: with north up and east left the major axis is 120 deg from +x, with east right 60."""
    wcs = sky_wcs(east_left)
    table = components()
    x, y, width, height, angle = pixel_ellipses(table, wcs)
    assert angle[0] % 180 == pytest.approx(expected, abs=0.1)
    assert width[0] == pytest.approx(6.0, rel=1e-3) and height[0] == pytest.approx(2.0, rel=1e-3)
    pixel = component_regions(table)[0].to_pixel(wcs)
    assert pixel.angle.to_value(u.deg) % 180 == pytest.approx(expected, abs=0.1)
    assert pixel.width == pytest.approx(6.0, rel=1e-3) and pixel.height == pytest.approx(2.0, rel=1e-3)


@pytest.mark.parametrize("east_left", [True, False])
def test_sky_ellipses_invert_pixel_ellipses(east_left):
    wcs = sky_wcs(east_left)
    table = components()
    x, y, width, height, angle = pixel_ellipses(table, wcs)
    major, minor, pa = sky_ellipses(x, y, width, height, angle, wcs)
    assert (major[0], minor[0], pa[0]) == pytest.approx((9.0, 3.0, 30.0), abs=1e-6)


@pytest.mark.parametrize("projection", ["NCP", "AZP", "SIN", "CAR"])
def test_sky_ellipses_where_the_projection_does_not_keep_angles(projection):
    """At Dec -43 deg an NCP image is stretched 1.5 times along Dec: a round pixel blob is an ellipse on the sky, and
    axes between the pixel axes turn; the sky ellipse, mapped back, is the pixel ellipse again."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---SIN", "DEC--SIN"] if projection == "NCP" else [f"RA---{projection}", f"DEC--{projection}"]
    wcs.wcs.crval = [257.0, -43.0]
    wcs.wcs.crpix = [500, 500]
    wcs.wcs.cdelt = [-1.5 / 3600, 1.5 / 3600]
    if projection == "NCP":  # as AIPS NCP is read: SIN with PV2_2 = cot(dec0)
        wcs.wcs.set_pv([(2, 1, 0.0), (2, 2, 1 / np.tan(np.deg2rad(-43.0)))])
    elif projection == "AZP":
        wcs.wcs.set_pv([(2, 1, 2.0), (2, 2, 30.0)])
    wcs.wcs.set()
    x, y = np.array([100.0, 500.0, 900.0]), np.array([900.0, 500.0, 100.0])
    angles = np.array([10.0, 45.0, 100.0])
    major, minor, pa = sky_ellipses(x, y, [6.0] * 3, [2.0] * 3, angles, wcs)
    for n in range(3):
        expected = sky_ellipse_the_long_way(wcs, x[n], y[n], 6.0, 2.0, angles[n])
        assert (major[n], minor[n]) == pytest.approx(expected[:2], rel=2e-3)
        assert angle_difference(pa[n], expected[2]) < 0.1
        centre = wcs.pixel_to_world(x[n], y[n])
        table = Table({"ra": [centre.ra.deg], "dec": [centre.dec.deg], "major": [major[n]], "minor": [minor[n]],
                       "pa": [pa[n]]})  # fmt: skip
        _, _, width, height, angle = pixel_ellipses(table, wcs)
        assert (width[0], height[0]) == pytest.approx((6.0, 2.0), rel=1e-5)
        assert angle_difference(angle[0], angles[n]) < 1e-4


def test_sources_centred_off_the_data_are_flagged_and_left_out_by_default():
    """Finders report components beyond the edge or on blanked corners with a clean flag of their own."""
    data = np.ones((100, 120), np.float32)
    data[:30, :30] = np.nan  # a blanked corner
    x = [60.0, -0.6, 119.4, 119.6, 10.0, 29.4, 30.6, np.nan]
    y = [50.0, 50.0, 99.4, 50.0, 10.0, 29.4, 10.0, 5.0]
    expected = [0, OUTSIDE_IMAGE, 0, OUTSIDE_IMAGE, ON_BLANK, ON_BLANK, 0, OUTSIDE_IMAGE]
    components = normalized_table("components", "aegean", {"x": x, "y": y, "ra": x, "dec": y, "flags": [0] * 8})
    islands = normalized_table("islands", "aegean", {"x": [60.0], "y": [50.0], "ra": [0.0], "dec": [0.0]})

    kept, note = check_footprint(Catalog(islands, components.copy()), data, drop=True)
    assert list(kept.components["x"][:3]) == [60.0, 119.4, 30.6] and len(kept.components) == 3
    assert (kept.components["appliance_flags"] == 0).all() and len(kept.islands) == 1
    assert note == (
        "footprint: 3 components centred outside the image, 2 components centred on blank pixels: "
        "left out (drop_outside)"
    )
    flagged, note = check_footprint(Catalog(islands, components.copy()), data, drop=False)
    assert list(flagged.components["appliance_flags"]) == expected and "kept, with appliance_flags set" in note
    assert check_footprint(Catalog(islands, components[:1]), data, drop=True)[1] is None

    option = Aegean().schema.options["drop_outside"]
    assert option.default is True and Aegean().describe()["drop_outside"]["default"] is True
    assert Aegean().schema.from_form({})["drop_outside"] is False  # an unchecked box
    assert Aegean().schema.from_form({"drop_outside": "on"})["drop_outside"] is True


def test_names_signal_to_noise_and_deconvolved_sizes():
    ra = (17 + 27 / 60 + 45.49 / 3600) * 15
    dec = -(40 + 20 / 60 + 31.99 / 3600)
    assert iau_names("aegean", [ra, 0.0001, np.nan], [dec, 0.00001, 0.0]) == [
        "AEGEAN J172745.4-402031",  # truncated, not rounded
        "AEGEAN J000000.0+000000",
        "",
    ]
    table = normalized_table("components", "sep", {"ra": [ra], "dec": [dec], "peak_flux": [5e-3], "local_rms": [1e-4]})
    assert table["iau_name"][0] == "SEP J172745.4-402031" and table["snr"][0] == pytest.approx(50.0)

    beam = (6.5, 5.0, 30.0)
    # a source of 4" x 2" at PA 100 seen through the beam: its covariance is the sum of both
    major, minor, pa = deconvolved(*sum_of_gaussians((4.0, 2.0, 100.0), beam), beam)
    assert (major[()], minor[()], pa[()]) == pytest.approx((4.0, 2.0, 100.0), abs=1e-6)
    point = deconvolved(6.5, 5.0, 30.0, beam)  # the beam itself: a point source
    assert point[0] == pytest.approx(0.0, abs=1e-6) and point[1] == pytest.approx(0.0, abs=1e-6)
    assert np.isnan(deconvolved(np.nan, 1.0, 0.0, beam)[0])


def sum_of_gaussians(a, b):
    """The FWHM ellipse (major, minor, PA) of two Gaussians convolved, worked out on their (east, north) moments."""

    def moments(major, minor, pa):
        t = np.deg2rad(pa)
        along, across = np.array([np.sin(t), np.cos(t)]), np.array([np.cos(t), -np.sin(t)])
        return major**2 * np.outer(along, along) + minor**2 * np.outer(across, across)

    values, vectors = np.linalg.eigh(moments(*a) + moments(*b))
    return np.sqrt(values[1]), np.sqrt(values[0]), np.rad2deg(np.arctan2(vectors[0, 1], vectors[1, 1])) % 180
