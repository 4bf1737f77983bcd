"""The residual image of a Gaussian finder's run: the image it read minus the fitted Gaussians of its component
catalog, made by the appliance for every finder that fits Gaussians, a band of rows at a time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from appliance.catalogs import pixel_ellipses
from appliance.fitsimage import celestial_wcs, plane_bands

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
RESIDUAL = "catalog_residual.fits"  # in the job folder (caesar writes its own residual.fits)
REACH_SIGMAS = 5.0  # beyond this a Gaussian is below 4e-6 of its peak


def write_residual(image: Path, components: Table, dest: Path) -> None:
    """``image`` (2-D, float32, as the finder read it) minus a Gaussian of peak_flux per component, with its FWHM
    ellipse (pixel_ellipses, so the residual agrees with what the viewer and the regions draw), into ``dest``."""
    with fits.open(image, memmap=False) as hdul:
        hdu = hdul[0]
        header = hdu.header.copy()
        gaussians = _pixel_gaussians(components, celestial_wcs(header)) if len(components) else []
        partial = dest.with_name(f".{dest.name}.part")
        partial.unlink(missing_ok=True)
        with fits.StreamingHDU(partial, header) as stream:
            first = 0
            for band in plane_bands(hdu):
                _subtract(band, first, gaussians)
                stream.write(band)
                first += band.shape[0]
    partial.replace(dest)


def _pixel_gaussians(components: Table, wcs) -> list[tuple[float, ...]]:
    """(x, y, peak, sigma_major, sigma_minor, angle rad from +x, reach in pixels) of each finite component."""
    x, y, width, height, angle = pixel_ellipses(components, wcs)
    peak = np.asarray(components["peak_flux"], dtype=float)
    rows = np.column_stack([x, y, peak, width / FWHM_PER_SIGMA, height / FWHM_PER_SIGMA, np.deg2rad(angle)])
    usable = np.isfinite(rows).all(axis=1) & (rows[:, 3] > 0) & (rows[:, 4] > 0)
    return [(*row, REACH_SIGMAS * row[3]) for row in rows[usable]]


def _subtract(band: np.ndarray, first_row: int, gaussians: list[tuple[float, ...]]) -> None:
    rows, cols = band.shape
    for x, y, peak, sigma_a, sigma_b, angle, reach in gaussians:
        top, bottom = max(int(y - reach), first_row), min(int(y + reach) + 2, first_row + rows)
        left, right = max(int(x - reach), 0), min(int(x + reach) + 2, cols)
        if top >= bottom or left >= right:
            continue
        yy, xx = np.mgrid[top:bottom, left:right]
        dx, dy = xx - x, yy - y
        u = dx * np.cos(angle) + dy * np.sin(angle)
        v = -dx * np.sin(angle) + dy * np.cos(angle)
        band[top - first_row : bottom - first_row, left:right] -= (
            peak * np.exp(-0.5 * ((u / sigma_a) ** 2 + (v / sigma_b) ** 2))
        ).astype(np.float32)
