"""PyBDSF (bdsf from PyPI): process_image with seed/flood thresholds, then its Gaussian and source lists.

PyBDSF has no command line for scripts, so the run is ``caesar-appliance tool appliance.apps.pybdsf_run`` with
the parameters in a JSON file next to the image."""

from __future__ import annotations

import json
import re

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from appliance.apps import FINDERS_IMAGE, App, JobInput, beam_options, catalog_options
from appliance.apps.options import Flag, OptionSchema, Value
from appliance.catalogs import Catalog, normalized_table
from appliance.errors import InvalidOptions
from appliance.fitsimage import celestial_wcs
from runners import Resources, RunSpec, Tool

BKG = "IMGBKG"
FIND = "SOURCE-FINDING"
FIT = "FITTING"
BEAM = "BEAM"

DEFAULT_FREQUENCY_HZ = 1.4e9
PARAMETERS = "pybdsf_parameters.json"


class PyBDSF(App):
    name = "pybdsf"
    title = "PyBDSF"
    description = (
        "PyBDSF's process_image: rms map, islands above a flood threshold seeded by a pixel threshold, "
        "Gaussian decomposition grouped into sources."
    )
    python_modules = ("bdsf",)
    image = FINDERS_IMAGE
    fits_gaussians = True
    flag_legend = {0: "PyBDSF gives its Gaussians no flag: always 0"}
    flags_are_bits = False
    progress_lines = (
        re.compile(r"(?P<stage>Fitting islands with Gaussians)[ .]*: \[[^\]]*\] (?P<done>\d+)/(?P<total>\d+)"),
        re.compile(r"^--> (?P<stage>.+)"),  # the stages process_image goes through
    )
    schema = OptionSchema(
        [
            Value(
                "seedthr",
                "seed threshold in sigma: an island needs a pixel this bright (thresh_pix)",
                category=FIND,
                default=5.0,
                min=0.5,
                max=1000,
            ),
            Value(
                "mergethr",
                "flood threshold in sigma: islands include pixels down to this level (thresh_isl); below seedthr",
                category=FIND,
                default=3.0,
                min=0.1,
                max=1000,
            ),
            Value(
                "bkgbox",
                "box for the rms and mean maps (pixels, rms_box); 0: chosen by PyBDSF",
                category=BKG,
                value_type=int,
                default=0,
                min=0,
                max=10000,
            ),
            Value(
                "bkggrid",
                "step of the rms box (pixels); 0: a third of bkgbox",
                category=BKG,
                value_type=int,
                default=0,
                min=0,
                max=10000,
            ),
            Flag("adaptive-rms-box", "use a smaller rms box around bright sources (adaptive_rms_box)", category=BKG),
            Flag(
                "wavelet",
                "also decompose the residual with the à trous wavelet transform to catch extended emission (atrous_do)",
                category=FIT,
            ),
            Value(
                "frequency",
                "observing frequency when the header has none (Hz; 0: header, else 1.4 GHz is assumed)",
                category=BEAM,
                default=0.0,
                min=0.0,
                max=1e13,
                advanced=True,
            ),
            *beam_options(),
            *catalog_options(),
            Value("ncores", "CPU cores", value_type=int, default=1, min=1, max=100),
        ]
    )

    def check_input(self, summary, options, target=None) -> None:
        if options["bkggrid"] and not options["bkgbox"]:
            raise InvalidOptions({"bkggrid": "needs bkgbox"})
        super().check_input(summary, options)

    def steps(self, job: JobInput) -> list[RunSpec]:
        o = job.options
        params: dict = {
            "thresh": "hard",
            "thresh_pix": o["seedthr"],
            "thresh_isl": o["mergethr"],
            "adaptive_rms_box": o["adaptive-rms-box"],
            "atrous_do": o["wavelet"],
            "ncores": job.cores,
            "quiet": False,  # its stage lines and island-fitting bar are the job's progress
        }
        if o["bkgbox"]:
            params["rms_box"] = [o["bkgbox"], o["bkggrid"] or max(1, o["bkgbox"] // 3)]
        params["frequency"] = o["frequency"] or job.summary.get("frequency_hz") or DEFAULT_FREQUENCY_HZ
        if not o["frequency"] and not job.summary.get("frequency_hz"):
            job.notes.append(f"pybdsf: no frequency in the header; assuming {DEFAULT_FREQUENCY_HZ / 1e9} GHz")
        parameters = json.dumps({"image": job.image.name, "process_image": params})
        return [
            RunSpec(name="pybdsf", command=Tool("appliance.apps.pybdsf_run", (PARAMETERS,)), workdir=job.workdir,
                    files={PARAMETERS: parameters}, inputs=(job.image.name,), resources=Resources(cores=job.cores),
                    image=self.image)
        ]  # fmt: skip

    def collect(self, job: JobInput) -> Catalog:
        """Islands are PyBDSF's islands (fitted or not), components its Gaussians, named <source>:<gaussian> after
        the source (pybdsf_srl.fits) PyBDSF groups them into. PyBDSF writes nothing when it finds nothing."""
        wcs = celestial_wcs(fits.getheader(job.image))
        return Catalog(
            islands=_islands(_read(job.workdir / "pybdsf_isl.fits"), wcs, self.name),
            components=_components(_read(job.workdir / "pybdsf_gaul.fits"), wcs, self.name),
        )


def _read(path) -> Table:
    return Table.read(path) if path.exists() else Table()


def _islands(islands: Table, wcs: WCS, app: str) -> Table:
    if not len(islands):
        return normalized_table("islands", app, {})
    ra, dec = wcs.celestial.all_pix2world(np.asarray(islands["Xposn"]), np.asarray(islands["Yposn"]), 0)
    values = {
        "island_id": np.asarray(islands["Isl_id"]) + 1,
        "name": islands["Isl_id"],
        "ra": ra,
        "dec": dec,
        "x": islands["Xposn"],
        "y": islands["Yposn"],
        "n_components": islands["N_gaus"],
        "npix": islands["Npix"],
        "peak_flux": islands["Peak_flux"],
        "int_flux": islands["Total_flux"],
        "int_flux_err": islands["E_Total_flux"],
        "local_rms": islands["Isl_rms"],
        "background": islands["Isl_mean"],
    }
    return normalized_table("islands", app, values, wcs)


def _components(gaussians: Table, wcs: WCS, app: str) -> Table:
    if not len(gaussians):
        return normalized_table("components", app, {})
    values = {
        "component_id": np.asarray(gaussians["Gaus_id"]) + 1,
        "island_id": np.asarray(gaussians["Isl_id"]) + 1,
        "name": [f"{s}:{g}" for s, g in zip(gaussians["Source_id"], gaussians["Gaus_id"], strict=True)],
        "ra": gaussians["RA"],
        "dec": gaussians["DEC"],
        "ra_err": np.asarray(gaussians["E_RA"]) * 3600,
        "dec_err": np.asarray(gaussians["E_DEC"]) * 3600,
        "peak_flux": gaussians["Peak_flux"],
        "peak_flux_err": gaussians["E_Peak_flux"],
        "int_flux": gaussians["Total_flux"],
        "int_flux_err": gaussians["E_Total_flux"],
        "major": np.asarray(gaussians["Maj"]) * 3600,
        "major_err": np.asarray(gaussians["E_Maj"]) * 3600,
        "minor": np.asarray(gaussians["Min"]) * 3600,
        "minor_err": np.asarray(gaussians["E_Min"]) * 3600,
        "pa": gaussians["PA"],
        "pa_err": gaussians["E_PA"],
        "major_deconv": np.asarray(gaussians["DC_Maj"]) * 3600,
        "minor_deconv": np.asarray(gaussians["DC_Min"]) * 3600,
        "pa_deconv": gaussians["DC_PA"],
        "local_rms": gaussians["Isl_rms"],
        "background": gaussians["Isl_mean"],
    }
    return normalized_table("components", app, values, wcs)
