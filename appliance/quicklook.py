"""What a browser is shown of an uploaded image: a 2-D FITS for the sky viewer (block-averaged when too large for a
browser), and a quicklook picture. Both are made once per file and cached under <home>/cache/."""

from __future__ import annotations

import math
import threading
from pathlib import Path

from appliance.catalogs import normalized_table, overlay_plot
from appliance.fitsimage import prepare_image
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


def viewer_copy(source: Path, hdu: int, longest_side: int, path: Path) -> Path:
    """An image (an upload, or a map a job made on its grid) as the sky viewer loads it, made once into ``path``:
    2-D, float32, its ``image_wcs`` (celestial, else 0-based pixels); averaged over f×f blocks when a side is longer
    than VIEW_MAX_SIDE."""
    if not path.exists():
        with _MAKING:
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                partial = path.with_name(f".{path.name}.part")
                block = math.ceil(longest_side / VIEW_MAX_SIDE)
                prepare_image(source, hdu, partial, with_beam=False, block=block)
                partial.replace(path)
    return path


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
