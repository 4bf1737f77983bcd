"""sep: a seconds-fast seed/flood finder on the SExtractor core (sep from PyPI), for quick looks.

Background and rms maps on a grid of about ten beams; islands of pixels above ``mergethr`` sigma, kept when their
brightest pixel is at least ``seedthr`` sigma (the rule caesar, Aegean and PyBDSF use: a plain pixel threshold
loses about half of the 5-7 sigma sources); sep's deblending splits islands into components. Fluxes are Kron
aperture sums (a circle of 1.5 beams where the Kron radius is unusable) converted to Jy with the beam area; shapes
are the isophotal second moments as FWHM, not fits. The run is ``caesar-appliance tool appliance.apps.sep_run``."""

from __future__ import annotations

import json

import numpy as np
from astropy.io import fits
from astropy.table import Table

from appliance.apps import FINDERS_IMAGE, App, JobInput, beam_options, catalog_options
from appliance.apps.options import OptionSchema, Value
from appliance.catalogs import Catalog, normalized_table, sky_ellipses
from appliance.fitsimage import celestial_wcs
from runners import RunSpec, Tool

PARAMETERS = "sep_parameters.json"
OBJECTS = "sep_objects.fits"
SIGMA_TO_FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))


class Sep(App):
    name = "sep"
    title = "sep (fast)"
    description = "SExtractor's core via sep: seed/flood islands with deblending, aperture fluxes; seconds per image."
    python_modules = ("sep",)
    image = FINDERS_IMAGE
    flag_legend = {  # sep's object and aperture flags
        1: "OBJ_MERGED: deblended from a blend",
        2: "OBJ_TRUNC: touches the edge of the image",
        4: "OBJ_DOVERFLOW: deblending ran out of room",
        8: "OBJ_SINGU: its moments are singular",
        16: "APER_TRUNC: the flux aperture runs beyond the image",
        32: "APER_HASMASKED: the flux aperture has blank pixels",
        64: "APER_ALLMASKED: the flux aperture is all blank pixels",
        128: "APER_NONPOSITIVE: the aperture's flux is not positive",
    }
    schema = OptionSchema(
        [
            Value("seedthr", "seed threshold in sigma: an island is kept when its brightest pixel reaches it",
                  category="SOURCE-FINDING", default=5.0, min=0.5, max=1000),
            Value("mergethr", "flood threshold in sigma: islands are the connected pixels above it; below seedthr",
                  category="SOURCE-FINDING", default=3.0, min=0.1, max=1000),
            Value("npixmin", "minimum pixels of a component", category="SOURCE-FINDING", value_type=int, default=5,
                  min=1, max=100000),
            Value("bkgbox", "box of the background and rms maps (pixels; 0: about ten beams, at least 32)",
                  category="IMGBKG", value_type=int, default=0, min=0, max=100000),
            Value("deblend-nthresh", "deblending levels", category="DEBLENDING", value_type=int, default=32, min=1,
                  max=256, advanced=True),
            Value("deblend-cont", "minimum flux fraction of a deblended component (1: no deblending)",
                  category="DEBLENDING", default=0.005, min=0.0, max=1.0, advanced=True),
            *beam_options(),
            *catalog_options(),
        ]
    )  # fmt: skip

    def cores(self, options) -> int:
        return 1

    def steps(self, job: JobInput) -> list[RunSpec]:
        parameters = {"image": job.image.name, "output": OBJECTS, **job.options}
        return [
            RunSpec(name="sep", command=Tool("appliance.apps.sep_run", (PARAMETERS,)), workdir=job.workdir,
                    files={PARAMETERS: json.dumps(parameters)}, inputs=(job.image.name,), image=self.image)
        ]  # fmt: skip

    def collect(self, job: JobInput) -> Catalog:
        wcs = celestial_wcs(fits.getheader(job.image))
        objects = Table.read(job.workdir / OBJECTS)
        if not len(objects):
            return Catalog(normalized_table("islands", self.name, {}), normalized_table("components", self.name, {}))
        ra, dec = wcs.all_pix2world(objects["x"], objects["y"], 0)
        major, minor, pa = sky_ellipses(
            objects["x"],
            objects["y"],
            np.asarray(objects["a"]) * SIGMA_TO_FWHM,
            np.asarray(objects["b"]) * SIGMA_TO_FWHM,
            np.rad2deg(np.asarray(objects["theta"])),
            wcs,
        )
        components = normalized_table(
            "components",
            self.name,
            {
                "component_id": range(1, len(objects) + 1),
                "island_id": objects["island"],
                "name": range(1, len(objects) + 1),
                "ra": ra,
                "dec": dec,
                "x": objects["x"],
                "y": objects["y"],
                "peak_flux": objects["peak"],
                "int_flux": objects["flux"],
                "int_flux_err": objects["flux_err"],
                "major": major,
                "minor": minor,
                "pa": pa,
                "local_rms": objects["rms"],
                "background": objects["background"],
                "flags": objects["flag"],
            },
        )
        return Catalog(islands=_islands(objects, components, wcs), components=components)


def _islands(objects: Table, components: Table, wcs) -> Table:
    """An island row per flood-filled island: flux-weighted centre, its components' total and brightest peak."""
    ids = np.asarray(objects["island"])
    columns: dict[str, list] = {k: [] for k in ("island_id", "name", "x", "y", "n_components", "npix", "peak_flux",
                                                "int_flux", "local_rms", "background")}  # fmt: skip
    for island in np.unique(ids):
        members = ids == island
        weights = np.clip(np.asarray(components["int_flux"])[members], 1e-30, None)
        columns["island_id"].append(island)
        columns["name"].append(island)
        columns["x"].append(np.average(np.asarray(objects["x"])[members], weights=weights))
        columns["y"].append(np.average(np.asarray(objects["y"])[members], weights=weights))
        columns["n_components"].append(int(members.sum()))
        columns["npix"].append(int(objects["island_npix"][members][0]))
        columns["peak_flux"].append(float(np.max(objects["peak"][members])))
        columns["int_flux"].append(float(np.sum(objects["flux"][members])))
        columns["local_rms"].append(float(np.median(objects["rms"][members])))
        columns["background"].append(float(np.median(objects["background"][members])))
    ra, dec = wcs.all_pix2world(np.asarray(columns["x"]), np.asarray(columns["y"]), 0)
    return normalized_table("islands", "sep", {**columns, "ra": ra, "dec": dec})
