"""What a browser is shown of an uploaded image: a 2-D FITS for the sky viewer (block-averaged when too large for a
browser, resampled onto a TAN grid when its projection is one the viewer draws wrongly), and a quicklook picture.
Both are made once per file and cached under <home>/cache/."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from appliance.catalogs import normalized_table, overlay_plot
from appliance.fitsimage import ROW_BLOCK_BYTES, image_wcs, prepare_image
from appliance.models import StoredFile

VIEW_MAX_SIDE = 4096  # a 4096² float32 image is 64 MB in the browser; 8192² loads but takes a few seconds more

# One product made at a time: two requests for one file would write the same temp files, and making one of a large
# gzipped image unpacks it on disk first.
_MAKING = threading.RLock()


def view_fits(record: StoredFile, source: Path, cache: Path) -> Path:
    """The uploaded image as the sky viewer loads it (see viewer_copy)."""
    return viewer_copy(
        source, record.summary["hdu"], max(record.summary["shape"]), cache / "view" / f"{record.uuid}.fits"
    )


def layer_view(record: StoredFile, source: Path, layer: Path, path: Path) -> Path:
    """A map a job made on the grid of the upload ``record`` (stored at ``source``), as the sky viewer loads it,
    made once into ``path``: placed by the upload's WCS, so that it lands on the grid of the upload's own copy."""
    grid = fits.getheader(source, record.summary["hdu"])
    return viewer_copy(layer, 0, max(record.summary["shape"]), path, grid)


def viewer_copy(source: Path, hdu: int, longest_side: int, path: Path, grid: fits.Header | None = None) -> Path:
    """An image (an upload, or a map a job made on its grid) as the sky viewer loads it, made once into ``path``:
    2-D, float32, its ``image_wcs`` (celestial, else 0-based pixels); averaged over f×f blocks when a side is longer
    than VIEW_MAX_SIDE; resampled onto viewer_grid when the viewer would draw its projection wrongly. ``grid`` is the
    header whose WCS places the pixels (a job's map is on its image's grid), by default the source's own."""
    if not path.exists():
        with _MAKING:
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                plane = path.with_name(f".{path.name}.plane")
                partial = path.with_name(f".{path.name}.part")
                block = math.ceil(longest_side / VIEW_MAX_SIDE)
                try:
                    prepare_image(source, hdu, plane, with_beam=False, block=block)
                    with fits.open(plane, memmap=False) as hdul:
                        wcs = image_wcs(hdul[0].header if grid is None else grid)
                        wcs = wcs[::block, ::block] if grid is not None and block > 1 else wcs
                        if wcs.has_celestial and not drawn_as_written(wcs):
                            resample_onto_viewer_grid(hdul[0], wcs, partial)
                        else:
                            partial.unlink(missing_ok=True)
                            plane.rename(partial)
                    partial.replace(path)
                finally:
                    plane.unlink(missing_ok=True)
                    partial.unlink(missing_ok=True)
    return path


# Projections Aladin Lite 3.8 places as written. It ignores PV terms (SIN with PV2_1/PV2_2, which is how astropy
# reads NCP, is drawn as plain SIN: 1.4-2.7' off on NCP fields), draws NCP wrongly even when written as NCP, and a
# tilted AZP 0.6" off; every other projection is resampled onto a TAN grid too rather than trusted untested.
VIEWER_PROJECTIONS = ("TAN", "SIN")


def drawn_as_written(wcs: WCS) -> bool:
    """Whether the sky viewer draws an image on ``wcs`` where it is: an equatorial ICRS or FK5 J2000 frame, one of
    VIEWER_PROJECTIONS without projection parameters, and no distortion."""
    projection = wcs.wcs.ctype[wcs.wcs.lng][5:].strip("-")
    return (
        projection in VIEWER_PROJECTIONS
        and not any(value for _, _, value in wcs.wcs.get_pv())
        and not wcs.has_distortion
        and wcs.wcs.lngtyp == "RA"
        and wcs.wcs.radesys in ("ICRS", "FK5")
        and (wcs.wcs.radesys == "ICRS" or wcs.wcs.equinox == 2000.0)
    )


def viewer_grid(wcs: WCS, shape: tuple[int, int]) -> tuple[WCS, tuple[int, int]]:
    """The TAN grid, ICRS and north up, an image on ``wcs`` of ``shape`` (rows, columns) is resampled onto for the
    viewer: tangent at the image's centre, its pixel scale, and just large enough to hold all of the image."""
    from astropy.wcs.utils import proj_plane_pixel_scales

    rows, cols = shape
    centre = wcs.pixel_to_world((cols - 1) / 2, (rows - 1) / 2).icrs
    scale = float(np.sqrt(np.prod(proj_plane_pixel_scales(wcs))))
    grid = WCS(naxis=2)
    grid.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    grid.wcs.radesys = "ICRS"
    grid.wcs.crval = [centre.ra.deg, centre.dec.deg]
    grid.wcs.cdelt = [-scale, scale]
    grid.wcs.crpix = [1.0, 1.0]
    # the image's outline, its pixels' outer edges, on the grid
    t = np.linspace(0.0, 1.0, 257)
    x = np.concatenate([t * cols, np.full_like(t, cols), (1 - t) * cols, np.zeros_like(t)]) - 0.5
    y = np.concatenate([np.zeros_like(t), t * rows, np.full_like(t, rows), (1 - t) * rows]) - 0.5
    gx, gy = grid.world_to_pixel(wcs.pixel_to_world(x, y))
    x0, y0 = math.floor(np.nanmin(gx) + 0.5), math.floor(np.nanmin(gy) + 0.5)
    x1, y1 = math.ceil(np.nanmax(gx) - 0.5), math.ceil(np.nanmax(gy) - 0.5)
    grid.wcs.crpix = [1.0 - x0, 1.0 - y0]
    grid.wcs.set()
    return grid, (y1 - y0 + 1, x1 - x0 + 1)


SPLINE_MARGIN = 8  # pixels read around a tile: a cubic spline's prefilter at a tile's edge fades within them


def resample_onto_viewer_grid(hdu, wcs: WCS, dest: Path) -> None:
    """Write the 2-D image ``hdu`` (on ``wcs``) resampled onto its viewer_grid into ``dest``: cubic spline (bilinear
    shifts an undersampled beam by up to a tenth of a pixel), NaN off the image and next to its blanks. Made a tile
    at a time (each reads only the part of the image under it) and written a band of rows at a time, so that memory
    stays bounded whatever the image's size."""
    from astropy.wcs.utils import pixel_to_pixel
    from scipy.ndimage import map_coordinates

    rows, cols = hdu.shape
    grid, (out_rows, out_cols) = viewer_grid(wcs, (rows, cols))
    header = fits.Header([("SIMPLE", True), ("BITPIX", -32), ("NAXIS", 2), ("NAXIS1", out_cols),
                          ("NAXIS2", out_rows)])  # fmt: skip
    header.extend(grid.to_header())
    for key in ("BUNIT", "TELESCOP", "OBJECT", "DATE-OBS", "RESTFRQ", "RESTFREQ"):
        if key in hdu.header:
            header[key] = hdu.header[key]
    for history in hdu.header.get("HISTORY", []):
        header["HISTORY"] = history
    projection = wcs.wcs.ctype[wcs.wcs.lng][5:].strip("-")
    terms = " with PV terms" if any(value for _, _, value in wcs.wcs.get_pv()) else ""
    header["HISTORY"] = f"resampled from {projection}{terms} onto a TAN grid for display"
    side = max(64, math.isqrt(ROW_BLOCK_BYTES // 32))  # a tile's coordinates: a few float64 arrays of side²
    dest.unlink(missing_ok=True)
    with fits.StreamingHDU(dest, header) as stream:
        for top in range(0, out_rows, side):
            band = np.full((min(side, out_rows - top), out_cols), np.nan, dtype=np.float32)
            for left in range(0, out_cols, side):
                gy, gx = np.mgrid[top : top + band.shape[0], left : min(left + side, out_cols)].astype(float)
                x, y = pixel_to_pixel(grid, wcs, gx, gy)
                on = np.isfinite(x) & np.isfinite(y) & (x > -0.5) & (x < cols - 0.5) & (y > -0.5) & (y < rows - 0.5)
                if not on.any():
                    continue
                x0, x1 = (
                    max(0, math.floor(x[on].min()) - SPLINE_MARGIN),
                    min(cols, math.ceil(x[on].max()) + SPLINE_MARGIN),
                )
                y0, y1 = (
                    max(0, math.floor(y[on].min()) - SPLINE_MARGIN),
                    min(rows, math.ceil(y[on].max()) + SPLINE_MARGIN),
                )
                part = np.asarray(hdu.section[y0:y1, x0:x1], dtype=np.float32)
                blank = ~np.isfinite(part)
                at = [np.where(on, y - y0, 0.0), np.where(on, x - x0, 0.0)]
                values = map_coordinates(np.where(blank, 0.0, part), at, order=3, mode="nearest")
                near_blank = map_coordinates(blank.astype(np.float32), at, order=1, mode="nearest") > 0
                band[:, left : left + gx.shape[1]] = np.where(on & ~near_blank, values, np.nan)
            stream.write(band)


def quicklook_png(record: StoredFile, source: Path, cache: Path) -> Path:
    """The image on its sky grid (or its pixel grid when it has no celestial WCS), asinh stretch over the zscale
    range."""
    path = cache / "quicklook" / f"{record.uuid}.png"
    if not path.exists():
        with _MAKING:
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                partial = path.with_name(f".{path.name}.part.png")
                overlay_plot(view_fits(record, source, cache), normalized_table("components", "", {}), partial,
                             record.filename_orig)  # fmt: skip
                partial.replace(path)
    return path


VIEW_COLORMAPS = ("grayscale", "viridis", "magma", "inferno", "plasma", "cividis")  # the viewer's and matplotlib's
VIEW_STRETCHES = ("linear", "sqrt", "log", "asinh")
STATISTICS_SAMPLE = 1 << 20  # pixels: percentiles to well under a per cent of the range


def view_statistics(view: Path) -> dict:
    """The viewer copy's unit and the cuts it offers: min/max, percentile ranges, and zscale, from a regular sample
    of at most STATISTICS_SAMPLE finite pixels."""
    import numpy as np
    from astropy.io import fits
    from astropy.visualization import ZScaleInterval

    with fits.open(view, memmap=True) as hdul:
        data = hdul[0].data
        step = max(1, int(math.ceil(math.sqrt(data.size / STATISTICS_SAMPLE))))
        sample = np.asarray(data[::step, ::step], dtype=float).ravel()
        unit = str(hdul[0].header.get("BUNIT", "")).strip()
    sample = sample[np.isfinite(sample)]
    if not sample.size:
        return {"unit": unit, "cuts": {}}
    cuts = {"minmax": [float(sample.min()), float(sample.max())]}
    for percent in (99.5, 99.0, 95.0):
        low, high = np.percentile(sample, [(100 - percent) / 2, 100 - (100 - percent) / 2])
        cuts[f"{percent:g}%"] = [float(low), float(high)]
    cuts["zscale"] = [float(v) for v in ZScaleInterval().get_limits(sample)]
    return {"unit": unit, "cuts": cuts}


def colorbar_png(colormap: str) -> bytes:
    """A 256 × 1 strip of ``colormap`` (one of VIEW_COLORMAPS), low values left, as the viewer paints it."""
    import io

    import numpy as np
    from matplotlib import colormaps
    from PIL import Image

    if colormap not in VIEW_COLORMAPS:
        raise ValueError(colormap)
    rgba = colormaps["gray" if colormap == "grayscale" else colormap](np.linspace(0, 1, 256))
    out = io.BytesIO()
    Image.fromarray((rgba[None, :, :3] * 255).round().astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()
