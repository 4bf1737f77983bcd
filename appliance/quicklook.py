"""What a browser is shown of an uploaded image: a 2-D FITS for the sky viewer (block-averaged when too large for a
browser), and a quicklook picture. Both are made once per file and cached under <home>/cache/."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.nddata import block_reduce

from appliance.catalogs import normalized_table, overlay_plot
from appliance.fitsimage import image_wcs, prepare_image
from appliance.models import StoredFile

VIEW_MAX_SIDE = 4096  # a 4096² float32 image is 64 MB in the browser; 8192² loads but takes a few seconds more


def view_fits(record: StoredFile, source: Path, cache: Path) -> Path:
    """The image as the sky viewer loads it: 2-D, float32, its ``image_wcs`` (celestial, else 0-based pixels);
    averaged over f×f blocks when a side is longer than VIEW_MAX_SIDE (astropy's strided WCS slice puts each new
    pixel at the centre of its block)."""
    path = cache / "view" / f"{record.uuid}.fits"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.part")
    prepare_image(source, record.summary["hdu"], partial, with_beam=False)
    factor = math.ceil(max(record.summary["shape"]) / VIEW_MAX_SIDE)
    if factor > 1:
        with fits.open(partial) as hdul:
            header = hdul[0].header
            data = block_reduce(hdul[0].data, factor, func=np.nanmean).astype(np.float32)
            out = image_wcs(header)[::factor, ::factor].to_header()
            for key in ("BUNIT", "OBJECT", "TELESCOP", "BMAJ", "BMIN", "BPA"):
                if key in header:
                    out[key] = header[key]
            out["HISTORY"] = f"averaged over {factor}x{factor} blocks for display"
        fits.PrimaryHDU(data, header=out).writeto(partial, overwrite=True)
    partial.replace(path)
    return path


def quicklook_png(record: StoredFile, source: Path, cache: Path) -> Path:
    """The image on its sky grid (or its pixel grid when it has no celestial WCS), asinh stretch over the zscale
    range."""
    path = cache / "quicklook" / f"{record.uuid}.png"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.part.png")
        overlay_plot(view_fits(record, source, cache), normalized_table("components", "", {}), partial,
                     record.filename_orig)  # fmt: skip
        partial.replace(path)
    return path
