"""Run PyBDSF in its own process: ``caesar-appliance tool appliance.apps.pybdsf_run <parameters.json>``.

Writes the Gaussian list (pybdsf_gaul.fits), the source list (pybdsf_srl.fits) and PyBDSF's own DS9 regions;
PyBDSF's log goes next to the image."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    import bdsf

    parameters = json.loads(Path(argv[0]).read_text())
    image = bdsf.process_image(parameters["image"], **parameters["process_image"])
    if image.nisl == 0 or image.ngaus == 0:
        print("pybdsf: no sources found")
        return 0
    for catalog_type in ("gaul", "srl"):
        image.write_catalog(
            outfile=f"pybdsf_{catalog_type}.fits", format="fits", catalog_type=catalog_type, clobber=True
        )
    image.write_catalog(outfile="pybdsf_gaul.reg", format="ds9", catalog_type="gaul", clobber=True)
    print(f"pybdsf: {image.nisl} islands, {image.ngaus} Gaussians")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
