"""The normalized catalog: schema, units, UCDs, and ellipse orientation agreeing between region files and picture."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy import units as u
from astropy.table import Table
from astropy.wcs import WCS

from appliance.catalogs import (
    COMPONENT_COLUMNS,
    ISLAND_COLUMNS,
    component_regions,
    normalized_table,
    pixel_ellipses,
    position_angles,
    write_table,
)


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
def test_position_angles_invert_pixel_angles(east_left):
    wcs = sky_wcs(east_left)
    table = components()
    *_, angle = pixel_ellipses(table, wcs)
    assert position_angles(table["ra"], table["dec"], angle, wcs)[0] == pytest.approx(30.0, abs=1e-6)
