"""What a browser is shown of an uploaded image: a 2-D FITS for the sky viewer (block-averaged when too large for a
browser, resampled onto a TAN grid when its projection is one the viewer draws wrongly), and a quicklook picture.
Both are made once per file and cached under <home>/cache/."""

from __future__ import annotations

import functools
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


# Aladin Lite 3.8 draws a FITS image as a mesh of ceil(15 × its size / 180°) cells a side (al-core's
# renderable/image: MAX_NUM_TRI_PER_SIDE_IMAGE), so any image under 12° as one cell, two triangles, its texture
# interpolated linearly between the corners' screen positions. That is exact only in a view centred on the image's
# tangent point: zoomed in elsewhere, the curvature of the sky between the corners moves every pixel, by about
# d·w²/8 (d the view's offset from the tangent point, w the image's side, in radians): 2.9" on a 3.4° image, a source
# 1.5° from its centre. Such an image is given to the viewer as tiles, each drawn as two triangles of its own.
VIEW_MESH_ERROR = 0.1  # of a pixel of the viewer copy: the most the viewer's drawing of a tile may move it
VIEW_MAX_TILES = 8  # tiles a side


def _unit_vectors(wcs: WCS, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    lon, lat = (np.radians(a) for a in wcs.pixel_to_world_values(x, y))
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


def _orthographic(v: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """The plane coordinates (radians) of unit vectors ``v`` in the viewer's SIN projection centred on ``centre``."""
    east = np.cross([0.0, 0.0, 1.0], centre)
    east = east / np.linalg.norm(east) if np.linalg.norm(east) > 1e-9 else np.array([0.0, 1.0, 0.0])
    north = np.cross(centre, east)
    return np.stack([v @ east, v @ north], axis=-1)


def tile_edges(side: int, tiles: int) -> np.ndarray:
    """The first pixel of each of ``tiles`` near-equal parts of ``side`` pixels, and ``side``."""
    return np.linspace(0, side, tiles + 1).round().astype(int)


def mesh_error_arcsec(wcs: WCS, shape: tuple[int, int], tiles: int) -> float:
    """How far (arcsec) the viewer draws a pixel of an image on ``wcs`` of ``shape`` (rows, columns), given as
    tiles × tiles tiles, from where it is, at most: each tile drawn as Aladin draws an image, two triangles between
    its corners (the outer edges of its corner pixels), in views centred on the image's corners and centre and on
    the tile's centre."""
    rows, cols = shape
    corners = _unit_vectors(wcs, np.array([-0.5, cols - 0.5, -0.5, cols - 0.5, (cols - 1) / 2]),
                            np.array([-0.5, -0.5, rows - 0.5, rows - 0.5, (rows - 1) / 2]))  # fmt: skip
    f = np.linspace(0.0, 1.0, 9)
    fu, fv = (a.ravel() for a in np.meshgrid(f, f))
    worst = 0.0
    xs, ys = tile_edges(cols, tiles), tile_edges(rows, tiles)
    for x0, x1 in zip(xs[:-1], xs[1:], strict=True):
        for y0, y1 in zip(ys[:-1], ys[1:], strict=True):
            ex, ey = np.array([x0, x1, x0, x1]) - 0.5, np.array([y0, y0, y1, y1]) - 0.5
            tl, tr, bl, br = _unit_vectors(wcs, ex, ey)
            points = _unit_vectors(wcs, x0 - 0.5 + fu * (x1 - x0), y0 - 0.5 + fv * (y1 - y0))
            middle = _unit_vectors(wcs, np.array([(x0 + x1 - 1) / 2]), np.array([(y0 + y1 - 1) / 2]))
            for centre in [*corners, *middle]:
                ptl, ptr, pbl, pbr = (_orthographic(c, centre) for c in (tl, tr, bl, br))
                lower = (fu + fv <= 1)[:, None]  # Aladin's triangles: (tl, tr, bl) and (tr, br, bl)
                drawn = np.where(
                    lower,
                    ptl + fu[:, None] * (ptr - ptl) + fv[:, None] * (pbl - ptl),
                    pbr + (1 - fu)[:, None] * (pbl - pbr) + (1 - fv)[:, None] * (ptr - pbr),
                )
                error = np.hypot(*(drawn - _orthographic(points, centre)).T)
                worst = max(worst, float(np.degrees(error.max()) * 3600.0))
    return worst


def view_tiles(view: Path) -> int:
    """How many tiles a side the viewer copy at ``view`` is given to the viewer as: the fewest that it draws within
    VIEW_MESH_ERROR of a pixel (1 for a 1000² image of 1.5" pixels; 6 for 4096² of 3"), at most VIEW_MAX_TILES."""
    stat = view.stat()
    return _view_tiles(str(view), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _view_tiles(view: str, mtime_ns: int, size: int) -> int:
    from astropy.wcs.utils import proj_plane_pixel_scales

    header = fits.getheader(view)
    wcs = image_wcs(header)
    if not wcs.has_celestial:
        return 1
    shape = (header["NAXIS2"], header["NAXIS1"])
    allowed = VIEW_MESH_ERROR * float(np.sqrt(np.prod(proj_plane_pixel_scales(wcs)))) * 3600.0
    return next((n for n in range(1, VIEW_MAX_TILES) if mesh_error_arcsec(wcs, shape, n) <= allowed), VIEW_MAX_TILES)


def view_tile(view: Path, index: int) -> Path:
    """Tile ``index`` (row by row from the first row of pixels) of the viewer copy at ``view``, cut out of it with
    its WCS (the reference pixel moved with the cut, no pixel resampled), made once beside it."""
    tiles = view_tiles(view)
    if not 0 <= index < tiles * tiles:
        raise IndexError(index)
    path = view.with_name(f"{view.stem}.tile{index}.fits")
    if not path.exists():
        with _MAKING:
            if not path.exists():
                partial = path.with_name(f".{path.name}.part")
                with fits.open(view, memmap=True) as hdul:
                    header = hdul[0].header.copy()
                    xs, ys = tile_edges(header["NAXIS1"], tiles), tile_edges(header["NAXIS2"], tiles)
                    row, column = divmod(index, tiles)
                    (x0, x1), (y0, y1) = xs[column : column + 2], ys[row : row + 2]
                    header["CRPIX1"] = header.get("CRPIX1", 0.0) - x0
                    header["CRPIX2"] = header.get("CRPIX2", 0.0) - y0
                    header["HISTORY"] = f"tile {index} of {tiles}x{tiles}: pixels [{x0}:{x1}, {y0}:{y1}] (0-based)"
                    fits.PrimaryHDU(np.array(hdul[0].data[y0:y1, x0:x1]), header).writeto(partial, overwrite=True)
                partial.replace(path)
    return path


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
        return {"unit": unit, "cuts": {}, "tiles": view_tiles(view)}
    cuts = {"minmax": [float(sample.min()), float(sample.max())]}
    for percent in (99.5, 99.0, 95.0):
        low, high = np.percentile(sample, [(100 - percent) / 2, 100 - (100 - percent) / 2])
        cuts[f"{percent:g}%"] = [float(low), float(high)]
    cuts["zscale"] = [float(v) for v in ZScaleInterval().get_limits(sample)]
    return {"unit": unit, "cuts": cuts, "tiles": view_tiles(view)}


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
