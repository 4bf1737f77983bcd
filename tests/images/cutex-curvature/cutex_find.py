"""A CuTEx-like compact-source detection (after Molinari et al. 2011, A&A 530, A133), for the CuTEx stand-in image.

The image is first smoothed with a Gaussian of the beam's size (a pixel's second difference alone is dominated by
noise; CuTEx's derivative masks span several pixels for the same reason), then its second derivatives are taken along
four directions (x, y and both diagonals, by finite differences); a
pixel is a detection pixel when its curvature is below -seedthr times the robust sigma (1.4826 MAD) of the curvature
in all four directions at once, which a compact source's peak is and noise rarely is. Connected detection pixels
(8-connectivity) with at least npixmin pixels are one source each. For each source: the brightest pixel's value is
the peak; the position is the flux-weighted centroid of the source's pixels; the size (FWHM along the major and
minor axes and the position angle) comes from the flux-weighted second moments of the pixels within 2 pixels of the
region, kept within [psflimmin, psflimmax] times the beam's size in pixels (npixpsf when the header has no beam); the
integrated flux is the Gaussian's, peak x FWHM_a x FWHM_b / (BMAJ x BMIN) in pixels. No Gaussian is fitted, unlike
CuTEx, so sizes are rougher.

Products, in --outdir, with caesar-rest's names (<stem> is the input file's name without .fits):
- ``catalog-<stem>.dat``: one line per source, columns (whitespace separated, '#' header lines):
  ``id name x y ra dec peak_flux int_flux fwhm_a fwhm_b pa npix curvature_snr`` with x, y 0-based pixels (x the
  numpy column), ra/dec in degrees (ICRS as the image's WCS), peak_flux in Jy/beam, int_flux in Jy, fwhm_a/fwhm_b in
  pixels, pa in degrees counter-clockwise from +x, curvature_snr the weakest of the four curvatures at the peak over
  its sigma.
- ``catalog-<stem>.json``: ``{"sources": [{column: value}]}``, the same rows.
- ``catalog_fitcomp-<stem>.dat|json``: the same rows again as components (each source is one component).
- ``plot_<stem>.png``: the image with the sources marked.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from scipy import ndimage

COLUMNS = ("id", "name", "x", "y", "ra", "dec", "peak_flux", "int_flux", "fwhm_a", "fwhm_b", "pa", "npix",
           "curvature_snr")  # fmt: skip
UNITS = ("", "", "pix", "pix", "deg", "deg", "Jy/beam", "Jy", "pix", "pix", "deg", "", "")


def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cutex_find", description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputfile", required=True)
    parser.add_argument("--outdir", default=".")
    parser.add_argument("--jobdir", default=".")
    parser.add_argument("--run", action="store_true", help="accepted, as caesar-rest's submitters do")
    parser.add_argument("--no-logredir", action="store_true", help="accepted, as caesar-rest's submitters do")
    parser.add_argument("--seedthr", type=float, default=5.0, help="curvature threshold, in its sigma")
    parser.add_argument("--npixmin", type=int, default=4, help="minimum pixels of a source")
    parser.add_argument("--npixpsf", type=float, default=2.7, help="pixels per PSF FWHM when the header has no beam")
    parser.add_argument("--psflimmin", type=float, default=0.5, help="smallest size, as a fraction of the PSF's")
    parser.add_argument("--psflimmax", type=float, default=2.0, help="largest size, as a fraction of the PSF's")
    return parser.parse_args(argv)


def curvatures(image: np.ndarray) -> list[np.ndarray]:
    """Second differences along x, y and the two diagonals (per pixel of distance squared)."""
    p = np.pad(image, 1, mode="edge")
    centre = p[1:-1, 1:-1]
    return [
        p[1:-1, :-2] - 2 * centre + p[1:-1, 2:],
        p[:-2, 1:-1] - 2 * centre + p[2:, 1:-1],
        (p[:-2, :-2] - 2 * centre + p[2:, 2:]) / 2,
        (p[:-2, 2:] - 2 * centre + p[2:, :-2]) / 2,
    ]


def robust_sigma(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(1.4826 * np.median(np.abs(finite - np.median(finite))))


def main(argv: list[str]) -> int:
    args = arguments(argv)
    path = Path(args.inputfile)
    with fits.open(path) as hdul:
        header = hdul[0].header
        image = np.asarray(hdul[0].data, dtype=np.float64)
    image = image.reshape(image.shape[-2:])  # a radio image's degenerate frequency and Stokes axes
    wcs = WCS(header).celestial
    scale = np.sqrt(np.abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600.0
    bmaj_px = header["BMAJ"] * 3600.0 / scale if "BMAJ" in header else args.npixpsf
    bmin_px = header["BMIN"] * 3600.0 / scale if "BMIN" in header else args.npixpsf
    blank = ~np.isfinite(image)
    image[blank] = 0.0

    sigma_px = math.sqrt(bmaj_px * bmin_px) / (2 * math.sqrt(2 * math.log(2)))
    curves = curvatures(ndimage.gaussian_filter(image, sigma_px))
    significance = np.min([-c / robust_sigma(c) for c in curves], axis=0)  # the weakest of the four at each pixel
    significance[blank] = 0.0
    regions, count = ndimage.label(significance > args.seedthr, structure=np.ones((3, 3)))
    print(f"cutex_find: {count} regions above {args.seedthr} sigma of curvature in {path.name} "
          f"({image.shape[1]}x{image.shape[0]}, beam {bmaj_px:.2f}x{bmin_px:.2f} px)")  # fmt: skip

    rows = []
    for label, box in enumerate(ndimage.find_objects(regions), start=1):
        inside = regions[box] == label
        if inside.sum() < args.npixmin:
            continue
        grown = ndimage.binary_dilation(regions == label, iterations=2)
        ys, xs = np.nonzero(grown)
        weights = np.clip(image[ys, xs], 0, None)
        if weights.sum() <= 0:
            continue
        x, y = np.average(xs, weights=weights), np.average(ys, weights=weights)
        cxx = np.average((xs - x) ** 2, weights=weights)
        cyy = np.average((ys - y) ** 2, weights=weights)
        cxy = np.average((xs - x) * (ys - y), weights=weights)
        spread = math.sqrt(((cxx - cyy) / 2) ** 2 + cxy**2)
        sigma_a = math.sqrt(max((cxx + cyy) / 2 + spread, 1e-6))
        sigma_b = math.sqrt(max((cxx + cyy) / 2 - spread, 1e-6))
        factor = 2 * math.sqrt(2 * math.log(2))
        fwhm_a = float(np.clip(sigma_a * factor, args.psflimmin * bmaj_px, args.psflimmax * bmaj_px))
        fwhm_b = float(np.clip(sigma_b * factor, args.psflimmin * bmin_px, args.psflimmax * bmin_px))
        pa = math.degrees(0.5 * math.atan2(2 * cxy, cxx - cyy))
        peak_index = np.argmax(np.where(regions[box] == label, image[box], -np.inf))
        py, px = np.unravel_index(peak_index, inside.shape)
        peak = float(image[box][py, px])
        ra, dec = wcs.all_pix2world([[x, y]], 0)[0]
        rows.append({
            "id": len(rows) + 1, "name": f"C{len(rows) + 1}", "x": round(float(x), 4), "y": round(float(y), 4),
            "ra": float(ra), "dec": float(dec), "peak_flux": peak,
            "int_flux": peak * fwhm_a * fwhm_b / (bmaj_px * bmin_px), "fwhm_a": round(fwhm_a, 4),
            "fwhm_b": round(fwhm_b, 4), "pa": round(pa, 3), "npix": int(inside.sum()),
            "curvature_snr": round(float(significance[box][py, px]), 3),
        })  # fmt: skip

    outdir = Path(args.outdir)
    stem = path.name.removesuffix(".fits")
    header_lines = [f"# CuTEx stand-in (curvature threshold {args.seedthr} sigma, npixmin {args.npixmin}) on "
                    f"{path.name}: {len(rows)} sources", "# " + " ".join(COLUMNS),
                    "# " + " ".join(unit or "-" for unit in UNITS)]  # fmt: skip
    table = "\n".join([*header_lines, *(" ".join(str(row[c]) for c in COLUMNS) for row in rows)]) + "\n"
    for prefix, key in (("catalog", "sources"), ("catalog_fitcomp", "components")):
        (outdir / f"{prefix}-{stem}.dat").write_text(table)
        (outdir / f"{prefix}-{stem}.json").write_text(json.dumps({key: rows}, indent=1))
    plot(image, rows, outdir / f"plot_{stem}.png")
    print(f"cutex_find: {len(rows)} sources written to {outdir}/catalog-{stem}.dat")
    return 0


def plot(image: np.ndarray, rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 6))
    low, high = np.percentile(image, [1, 99.5])
    axes.imshow(image, origin="lower", cmap="gray", vmin=low, vmax=high)
    axes.scatter([r["x"] for r in rows], [r["y"] for r in rows], s=60, facecolors="none", edgecolors="tab:red")
    axes.set_title(f"{len(rows)} sources")
    figure.savefig(path, dpi=80)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
