"""Run sep in its own process: ``caesar-appliance tool appliance.apps.sep_run <parameters.json>``.

Writes sep_objects.fits: one row per kept component, 0-based pixel positions, peak in Jy/beam, Kron flux in Jy,
isophotal shape (a, b sigma in pixels, theta in radians from +x), local rms and background, island number."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str]) -> int:
    import sep
    from astropy.io import fits
    from astropy.table import Table
    from astropy.wcs.utils import proj_plane_pixel_scales
    from scipy import ndimage

    from appliance.fitsimage import celestial_wcs

    p = json.loads(Path(argv[0]).read_text())
    with fits.open(p["image"]) as hdul:
        header = hdul[0].header
        data = np.asarray(hdul[0].data, dtype=np.float64)
    pixel_arcsec = float(np.sqrt(np.prod(proj_plane_pixel_scales(celestial_wcs(header))))) * 3600.0
    bmaj_px, bmin_px = header["BMAJ"] * 3600.0 / pixel_arcsec, header["BMIN"] * 3600.0 / pixel_arcsec
    beam_area_px = math.pi * bmaj_px * bmin_px / (4.0 * math.log(2.0))
    mask = ~np.isfinite(data)
    data[mask] = 0.0

    box = p["bkgbox"] or max(32, round(10 * bmaj_px))
    background = sep.Background(data, mask=mask, bw=box, bh=box, fw=3, fh=3)
    back, rms = background.back(), background.rms()
    signal = data - back
    sep.set_extract_pixstack(max(300000, data.size))
    sep.set_sub_object_limit(4096)
    objects, segments = sep.extract(
        signal, p["mergethr"], err=rms, mask=mask, minarea=p["npixmin"], filter_kernel=None,
        deblend_nthresh=p["deblend-nthresh"], deblend_cont=p["deblend-cont"], segmentation_map=True,
    )  # fmt: skip
    print(f"sep: {len(objects)} components above {p['mergethr']} sigma (background box {box} px)")

    # islands: the connected pixels above the flood threshold; kept when their brightest pixel reaches the seed
    islands, _ = ndimage.label(segments > 0, structure=np.ones((3, 3)))
    island = islands[objects["ypeak"], objects["xpeak"]]
    significance = objects["peak"] / rms[objects["ypeak"], objects["xpeak"]]
    best = ndimage.maximum(significance, labels=island, index=island)
    keep = best >= p["seedthr"]
    objects, island = objects[keep], island[keep]
    island_npix = ndimage.sum(np.ones_like(islands), labels=islands, index=island).astype(int)

    x, y, a, b, theta = objects["x"], objects["y"], objects["a"], objects["b"], objects["theta"]
    kron, kron_flag = sep.kron_radius(signal, x, y, a, b, theta, 6.0, mask=mask)
    flux, flux_err, flag = sep.sum_ellipse(signal, x, y, a, b, theta, 2.5 * kron, err=rms, mask=mask, subpix=1)
    circle = 1.5 * bmaj_px
    unusable = (kron_flag != 0) | ~np.isfinite(kron) | (2.5 * kron * np.sqrt(a * b) < circle)
    if unusable.any():
        c_flux, c_err, c_flag = sep.sum_circle(signal, x[unusable], y[unusable], circle, err=rms, mask=mask,
                                               subpix=1)  # fmt: skip
        flux[unusable], flux_err[unusable], flag[unusable] = c_flux, c_err, c_flag
    table = Table(
        {
            "x": x, "y": y, "island": island, "island_npix": island_npix, "peak": objects["peak"],
            "flux": flux / beam_area_px, "flux_err": flux_err / beam_area_px, "a": a, "b": b, "theta": theta,
            "rms": rms[objects["ypeak"], objects["xpeak"]], "background": back[objects["ypeak"], objects["xpeak"]],
            "flag": objects["flag"] | flag,
        },
        meta={"PIXSCALE": pixel_arcsec, "BEAMAREA": beam_area_px, "BKGBOX": box},
    )  # fmt: skip
    table.write(p["output"], overwrite=True)
    print(f"sep: {len(table)} components in {len(set(island.tolist()))} islands with a {p['seedthr']} sigma seed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
