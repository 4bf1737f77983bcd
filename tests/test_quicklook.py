"""What a browser is shown of an image: the viewer's copy and the quicklook, for sky and pixel-only images."""

from __future__ import annotations

import numpy as np
from astropy.io import fits
from astropy.nddata import block_reduce

from appliance.fitsimage import celestial_wcs
from appliance.quicklook import view_fits
from tests.conftest import write_image


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
