"""What a browser is shown of an image: the viewer's copy and the quicklook, for sky and pixel-only images."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import block_reduce
from astropy.wcs import WCS

from appliance.fitsimage import celestial_wcs
from appliance.quicklook import view_fits
from tests.conftest import upload_file, write_image


def test_viewer_copy_of_a_large_image_is_block_averaged_with_its_wcs_at_the_block_centres(appliance, tmp_path):
    path = write_image(tmp_path / "wide.fits", shape=(31, 8195))  # 3x3 blocks; a row and two columns left over
    record = appliance.files.add("anonymous", path)
    view = view_fits(record, appliance.files.path(record), appliance.settings.cache_dir)
    with fits.open(view) as copy, fits.open(path) as original:
        assert copy[0].data.shape == (10, 2731)
        np.testing.assert_allclose(copy[0].data, block_reduce(original[0].data, 3, func=np.nanmean), rtol=1e-6)
        shown, sky = celestial_wcs(copy[0].header), celestial_wcs(original[0].header)
        for x, y in ((0, 0), (1000, 4), (2730, 9)):
            centre = sky.pixel_to_world(3 * x + 1, 3 * y + 1)  # the middle pixel of the block
            assert shown.pixel_to_world(x, y).separation(centre).arcsec < 1e-3


@pytest.mark.parametrize(
    ("shape", "header", "block"),
    [
        ((64, 64), {}, 1),  # no WCS keywords at all
        ((64, 64), {"CTYPE1": "LINEAR", "CTYPE2": "LINEAR", "CDELT1": 2.0, "CDELT2": 2.0}, 1),
        ((64, 64), {"CTYPE1": "RA---XYZ", "CTYPE2": "DEC--XYZ"}, 1),  # a projection wcslib does not know
        ((20, 8195), {}, 3),  # large enough to be averaged for the viewer
    ],
    ids=["no_wcs", "linear_axes", "unknown_projection", "averaged"],
)
def test_image_without_celestial_wcs_is_shown_on_its_pixel_axes(client, tmp_path, shape, header, block):
    file_uuid = upload_file(client, write_image(tmp_path / "pixels.fits", shape=shape, header=header, wcs=False))
    assert client.get(f"/files/{file_uuid}").status_code == 200
    quicklook = client.get(f"/files/{file_uuid}/quicklook.png")
    assert quicklook.status_code == 200 and quicklook.content.startswith(b"\x89PNG")
    view = client.get(f"/files/{file_uuid}/view.fits")
    assert view.status_code == 200
    with fits.open(io.BytesIO(view.content)) as copy:
        assert copy[0].header["BITPIX"] == -32 and copy[0].data.shape == (shape[0] // block, shape[1] // block)
        wcs = WCS(copy[0].header)
        assert not wcs.has_celestial and copy[0].header["WCSNAME"] == "image pixels, 0-based"
        # each pixel of the copy says which pixel of the upload it shows (the middle of its block)
        x, y = wcs.pixel_to_world_values(5, 7)
        assert (x, y) == pytest.approx((5 * block + (block - 1) / 2, 7 * block + (block - 1) / 2))
