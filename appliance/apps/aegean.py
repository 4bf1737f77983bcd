"""Aegean (AegeanTools from PyPI): BANE computes the background and noise maps, then aegean finds and fits.

caesar-rest's aegean options keep their names and defaults; the rest of Aegean's useful knobs are added."""

from __future__ import annotations

import re
from importlib.metadata import version

import numpy as np
from astropy.io import fits
from astropy.table import Table

from appliance.apps import FINDERS_IMAGE, App, Availability, JobInput, beam_options, catalog_options
from appliance.apps.options import Flag, OptionSchema, Value
from appliance.catalogs import Catalog, normalized_table
from appliance.fitsimage import celestial_wcs
from runners import Resources, RunSpec, Tool

BKG = "IMGBKG"
FIND = "SOURCE-FINDING"
FIT = "FITTING"
BEAM = "BEAM"
OUT = "OUTPUT"


class Aegean(App):
    name = "aegean"
    title = "Aegean"
    description = "BANE background and noise maps, then Aegean's seed/flood island search and Gaussian fitting."
    python_modules = ("AegeanTools",)
    image = FINDERS_IMAGE
    fits_gaussians = True
    maps = {"background": "input_bkg.fits", "rms": "input_rms.fits"}  # BANE's, when kept (save-bkgmap, -rmsmap)
    progress_lines = (
        re.compile(r"(?P<stage>Fitting Islands):+\s+\d+%\|[^|]*\|\s*(?P<done>\d+)/(?P<total>\d+)"),  # --progress
        re.compile(r"^INFO\s+\S+ \S+ (?:BANE|aegean|source_finder) - \w+: (?P<stage>.+)"),  # what BANE, aegean do
    )
    flag_legend = {  # AegeanTools.flags
        1: "FITERRSMALL: the fit's uncertainties are smaller than they should be",
        2: "FITERR: the fit failed; the values are its starting estimates",
        4: "FIXED2PSF: the shape was fixed to the beam",
        8: "FIXEDCIRCULAR: the shape was fixed to a circle",
        16: "NOTFIT: not fitted",
        32: "WCSERR: the sky position could not be computed",
        64: "PRIORIZED: fitted at a given position (priorized fitting)",
    }
    schema = OptionSchema(
        [
            Flag("save-bkgmap", "keep BANE's background map with the outputs", category=OUT),
            Flag("save-rmsmap", "keep BANE's noise (rms) map with the outputs", category=OUT),
            Value(
                "bkgbox",
                "BANE box over which background and rms are computed (pixels)",
                category=BKG,
                value_type=int,
                default=100,
                min=5,
                max=10000,
            ),
            Value(
                "bkggrid",
                "BANE grid step at which background and rms are sampled (pixels)",
                category=BKG,
                value_type=int,
                default=20,
                min=5,
                max=1000,
            ),
            Value(
                "seedthr",
                "seed threshold: islands are seeded by pixels this many sigma above the background (aegean --seedclip)",
                category=FIND,
                default=5.0,
                min=0.5,
                max=1000,
            ),
            Value(
                "mergethr",
                "flood (merge) threshold: islands grow down to this many sigma (aegean --floodclip); below seedthr",
                category=FIND,
                default=2.6,
                min=0.1,
                max=1000,
            ),
            Flag("negative", "also report sources with negative flux", category=FIND),
            Value(
                "fit-maxcomponents",
                "islands with more summits than this are estimated, not fitted "
                "(aegean --maxsummits); 0 fits every island",
                category=FIT,
                value_type=int,
                default=3,
                min=0,
                max=100,
            ),
            *beam_options(),
            *catalog_options(),
            Value("ncores", "CPU cores for BANE and aegean", value_type=int, default=1, min=1, max=100),
            Flag(
                "no-logredir",
                "accepted for caesar-rest compatibility: the finder's output always goes to the job log",
                advanced=True,
            ),
        ]
    )

    def availability(self) -> Availability:
        found = super().availability()
        if not found.available:
            return found
        numpy_version = tuple(int(p) for p in version("numpy").split(".")[:2])
        if numpy_version >= (2, 4):  # AegeanTools 2.3.5 calls np.linalg.linalg, gone in numpy 2.4 (Aegean #228)
            return Availability(False, f"AegeanTools 2.3.5 fails with numpy {version('numpy')}; numpy < 2.4 needed")
        return found

    def steps(self, job: JobInput) -> list[RunSpec]:
        o = job.options
        image = job.image.name
        bane = (
            "BANE",
            "--cores",
            str(job.cores),
            "--grid",
            str(o["bkggrid"]),
            str(o["bkggrid"]),
            "--box",
            str(o["bkgbox"]),
            str(o["bkgbox"]),
            image,
        )
        aegean = [
            "aegean",
            "--autoload",
            "--cores",
            str(job.cores),
            "--island",
            "--progress",
            "--seedclip",
            str(o["seedthr"]),
            "--floodclip",
            str(o["mergethr"]),
            "--table",
            "aegean.vot,aegean.reg",  # its FITS tables hold positions as float32 (0.1" steps); VOTable as double
        ]
        if o["fit-maxcomponents"] > 0:
            aegean += ["--maxsummits", str(o["fit-maxcomponents"])]
        if o["negative"]:
            aegean.append("--negative")
        beam = self.beam_override(o)
        if beam is not None:
            aegean += ["--beam", *(str(v) for v in (beam[0] / 3600, beam[1] / 3600, beam[2]))]
        aegean.append(image)
        resources = Resources(cores=job.cores)
        return [
            RunSpec(name="BANE", command=Tool(bane[0], bane[1:]), workdir=job.workdir, inputs=(image,),
                    resources=resources, image=self.image),
            RunSpec(name="aegean", command=Tool(aegean[0], tuple(aegean[1:])), workdir=job.workdir, inputs=(image,),
                    resources=resources, image=self.image),
        ]  # fmt: skip

    def collect(self, job: JobInput) -> Catalog:
        wcs = celestial_wcs(fits.getheader(job.image))
        components = _read(job.workdir / "aegean_comp.vot")
        islands = _read(job.workdir / "aegean_isle.vot")
        stem = job.image.name.removesuffix(".fits")
        for kind, keep in (("bkg", job.options["save-bkgmap"]), ("rms", job.options["save-rmsmap"])):
            if not keep:
                (job.workdir / f"{stem}_{kind}.fits").unlink(missing_ok=True)
        return Catalog(
            islands=normalized_table(
                "islands",
                self.name,
                {
                    "island_id": islands["island"],
                    "name": islands["island"],
                    "ra": islands["ra"],
                    "dec": islands["dec"],
                    "n_components": islands["components"],
                    "npix": islands["pixels"],
                    "peak_flux": islands["peak_flux"],
                    "int_flux": islands["int_flux"],
                    "int_flux_err": _error(islands["err_int_flux"]),
                    "local_rms": islands["local_rms"],
                    "background": islands["background"],
                    "flags": islands["flags"],
                }
                if len(islands)
                else {},
                wcs,
            ),
            components=normalized_table(
                "components",
                self.name,
                {
                    "component_id": range(1, len(components) + 1),
                    "island_id": components["island"],
                    "name": [f"({i},{s})" for i, s in zip(components["island"], components["source"], strict=True)],
                    "ra": components["ra"],
                    "dec": components["dec"],
                    "ra_err": _arcsec(components["err_ra"]),
                    "dec_err": _arcsec(components["err_dec"]),
                    "peak_flux": components["peak_flux"],
                    "peak_flux_err": _error(components["err_peak_flux"]),
                    "int_flux": components["int_flux"],
                    "int_flux_err": _error(components["err_int_flux"]),
                    "major": components["a"],
                    "major_err": _error(components["err_a"]),
                    "minor": components["b"],
                    "minor_err": _error(components["err_b"]),
                    "pa": components["pa"],
                    "pa_err": _error(components["err_pa"]),
                    "local_rms": components["local_rms"],
                    "background": components["background"],
                    "flags": components["flags"],
                }
                if len(components)
                else {},
                wcs,
            ),
        )


def _read(path) -> Table:
    """Aegean writes no table when it finds nothing."""
    return Table.read(path) if path.exists() else Table()


def _error(values) -> np.ndarray:
    """Aegean reports -1 for an uncertainty it could not compute."""
    values = np.asarray(values, dtype=float)
    return np.where(values < 0, np.nan, values)


def _arcsec(degrees) -> np.ndarray:
    return _error(degrees) * 3600.0
