"""Run PyBDSF in its own process: ``caesar-appliance tool appliance.apps.pybdsf_run <parameters.json>``.

Writes the Gaussian list (pybdsf_gaul.fits), the source list (pybdsf_srl.fits), the island list (pybdsf_isl.fits:
PyBDSF writes none, so it is made from its islands, fitted or not) and PyBDSF's own DS9 regions; PyBDSF's log goes
next to the image."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    import bdsf

    parameters = json.loads(Path(argv[0]).read_text())
    image = bdsf.process_image(parameters["image"], **parameters["process_image"])
    if image.nisl == 0:
        print("pybdsf: no islands found")
        return 0
    island_table(image).write("pybdsf_isl.fits", overwrite=True)
    if image.ngaus:
        for catalog_type in ("gaul", "srl"):
            image.write_catalog(
                outfile=f"pybdsf_{catalog_type}.fits", format="fits", catalog_type=catalog_type, clobber=True
            )
        image.write_catalog(outfile="pybdsf_gaul.reg", format="ds9", catalog_type="gaul", clobber=True)
    print(f"pybdsf: {image.nisl} islands, {image.ngaus} Gaussians")
    return 0


def island_table(image):  # type: ignore[no-untyped-def]
    """One row per PyBDSF island: its pixel count, flux-weighted centre (0-based pixels of the image), the sum of
    its pixels (Jy) with its error, brightest pixel, rms and mean, and how many Gaussians PyBDSF fitted in it."""
    import numpy as np
    from astropy.table import Table

    rows = []
    for island in image.islands:
        inside = ~island.mask_active
        along_x, along_y = np.nonzero(inside)  # PyBDSF's arrays are indexed [x, y]
        weights = np.clip(island.image[inside], 0.0, None)
        weights = weights if weights.sum() > 0 else None
        rows.append(
            {
                "Isl_id": island.island_id,
                "Xposn": island.origin[0] + np.average(along_x, weights=weights),
                "Yposn": island.origin[1] + np.average(along_y, weights=weights),
                "Npix": int(island.size_active),
                "Total_flux": float(island.total_flux),
                "E_Total_flux": float(island.total_fluxE),
                "Peak_flux": float(island.max_value),
                "Isl_rms": float(island.rms),
                "Isl_mean": float(island.mean),
                "N_gaus": len(getattr(island, "gaul", [])),
            }
        )
    return Table(rows=rows)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
