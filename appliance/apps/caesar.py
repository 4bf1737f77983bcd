"""caesar (SKA-INAF/caesar), run from an existing installation: FindSource with a config written from caesar-rest's
options, then its island and fitted-component catalogs read into the normalized catalog.

caesar needs CERN ROOT and cannot be installed by this project; the setting ``caesar_findsource`` names the
FindSource binary (else it is looked up on PATH). On a runner with containers it runs in the image of
``[apps.caesar] image`` (sriggi/caesar:latest), at the path ``[apps.caesar] findsource`` inside it, with the same
config, argv and products. Pixel positions in caesar's catalogs are 0-based, as ours; its DS9
regions are 1-based. Sky positions are computed from caesar's pixel positions with astropy (caesar's own are wrong
for some projections, e.g. AZP); sizes are its pixel FWHMs times the pixel scale (its arcsec sizes come out several
per cent small).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from appliance.apps import App, Availability, JobInput, catalog_options
from appliance.apps.caesar_options import RULES, ConfigRule
from appliance.apps.options import Flag, OptionSchema
from appliance.catalogs import Catalog, deconvolved, normalized_table, sky_ellipses
from appliance.engine import Target
from appliance.errors import InvalidContent, InvalidOptions
from appliance.fitsimage import celestial_wcs
from runners import Resources, RunSpec

CONFIG = "caesar.cfg"
IMAGE_FINDSOURCE = "/opt/Software/caesar/install/bin/FindSource"  # where sriggi/caesar has it
# file names of caesar's outputs in the job folder, fixed by the config this app writes
OUTPUT_KEYS = {
    "inputFile": "input.fits",
    "outputFile": "out.root",
    "outputCatalogFile": "catalog.dat",
    "outputComponentCatalogFile": "catalog_fitcomp.dat",
    "ds9RegionFile": "ds9.reg",
    "ds9FitRegionFile": "ds9_fitcomp.reg",
    "bkgMapFITSFile": "bkg.fits",
    "noiseMapFITSFile": "rms.fits",
    "significanceMapFITSFile": "significance.fits",
    "residualMapFITSFile": "residual.fits",
    "inputMapFITSFile": "input_map.fits",
    "saliencyMapFITSFile": "saliency.fits",
    # caesar-rest always asks for regions and JSON catalogs
    "saveDS9Region": "true",
    "saveCatalogFileInJson": "true",
}


class Caesar(App):
    name = "caesar"
    title = "CAESAR"
    description = (
        "caesar's FindSource: local background and noise maps, compact sources by seed/flood thresholds with nested "
        "sources, Gaussian fits, and optionally extended sources (saliency, active contours, wavelets)."
    )
    fits_gaussians = True
    maps = {"background": "bkg.fits", "rms": "rms.fits", "significance": "significance.fits"}  # when saved
    flags_are_bits = False
    flag_legend = {3: "high-quality fit", 2: "medium-quality fit", 1: "low-quality fit", 0: "bad fit"}  # fitQuality
    reads_pv_terms = False  # its RA/Dec are 85-153" off on NCP fields given as SIN with PV terms
    schema = OptionSchema([*(rule.option for rule in RULES), *catalog_options()])
    rules = {rule.option.name: rule for rule in RULES}

    image = "sriggi/caesar:latest"
    image_findsource = IMAGE_FINDSOURCE  # FindSource inside the image: [apps.caesar] findsource
    setting_names = ("runner", "image", "findsource")

    def __init__(self, findsource: str = "", job_cores: int = 1) -> None:
        self.findsource_setting = findsource
        self.job_cores = job_cores

    def configure(self, values: dict[str, Any]) -> None:
        values = dict(values)
        if "findsource" in values:
            self.image_findsource = values.pop("findsource")
        super().configure(values)

    def findsource(self) -> Path | None:
        found = shutil.which(self.findsource_setting or "FindSource")
        return Path(found) if found else None

    def availability(self) -> Availability:
        findsource = self.findsource()
        if findsource is None:
            where = self.findsource_setting or "FindSource on PATH"
            return Availability(
                False,
                f"caesar is not installed here ({where} not found); it needs CERN ROOT and cannot be installed by "
                "the appliance: set caesar_findsource to the FindSource of an existing caesar installation",
            )
        problem = _does_not_run(str(findsource), findsource.stat().st_mtime_ns)
        if problem:
            return Availability(False, f"{findsource} does not run: {problem}")
        return Availability(True)

    def cores(self, options: dict[str, Any]) -> int:
        threads = options["nthreads"] if options["nthreads"] > 0 else self.job_cores
        return max(1, threads) * (options["nproc"] if self._uses_mpi(options) else 1)

    def _uses_mpi(self, options: dict[str, Any]) -> bool:
        return options["nproc"] > 1 and not options["no-mpi"]

    def beam_override(self, options: dict[str, Any]) -> None:
        return None  # caesar's bmaj/bmin/bpa are fallbacks only: see beam_fallback

    def beam_fallback(self, options: dict[str, Any]) -> tuple[float, float, float]:
        return options["bmaj"], options["bmin"], options["bpa"]

    def check_input(self, summary: dict[str, Any], options: dict[str, Any], target: Target | None = None) -> None:
        problems = {}
        for name, rule in self.rules.items():
            reason = _outside_accepted(rule, options[name])
            if reason:
                problems[name] = reason
        if options["mergethr"] >= options["seedthr"]:
            problems["mergethr"] = f"must be below seedthr ({options['seedthr']})"
        here = target is None or not target.containers  # an image brings its own mpirun
        if here and self._uses_mpi(options) and (shutil.which("mpirun") is None or not self._findsource_mpi().exists()):
            problems["nproc"] = "above 1 needs mpirun and FindSourceMPI next to FindSource (or give no-mpi)"
        if problems:
            raise InvalidOptions(problems)
        if not summary.get("celestial_wcs"):
            raise InvalidContent("no_celestial_wcs", "caesar needs an image with a celestial WCS (RA/Dec axes)")

    def _findsource_mpi(self) -> Path:
        found = self.findsource()
        return found.with_name("FindSourceMPI") if found else Path("FindSourceMPI")

    def config_text(self, options: dict[str, Any]) -> str:
        """The config FindSource reads: ``key = value`` lines, one per key, ending with a newline."""
        lines = {key: value for key, value in OUTPUT_KEYS.items()}
        for name, rule in self.rules.items():
            for key, value in config_values(rule, options[name]).items():
                lines[key] = value
        return "".join(f"{key} = {value}\n" for key, value in lines.items())

    def steps(self, job: JobInput) -> list[RunSpec]:
        if job.in_container:
            findsource, image = Path(self.image_findsource), self.image
        else:
            found = self.findsource()
            if found is None:
                raise InvalidContent("app_unavailable", self.availability().reason or "caesar is not installed")
            findsource, image = found, None
        common = {"workdir": job.workdir, "files": {CONFIG: self.config_text(job.options)},
                  "inputs": (job.image.name,), "image": image,
                  "resources": Resources(cores=job.cores, tasks=job.options["nproc"] if self._uses_mpi(job.options) else 1)}  # fmt: skip
        if not self._uses_mpi(job.options):
            return [RunSpec(name="FindSource", command=[str(findsource), f"--config={CONFIG}"], **common)]
        mpi = findsource.with_name("FindSourceMPI")
        argv = ["mpirun", "-np", str(job.options["nproc"]), str(mpi), f"--config={CONFIG}"]
        # Open MPI's mpirun refuses to start as root unless told twice (a container, a lab's service account)
        root = job.in_container or os.geteuid() == 0
        env = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"} if root else {}
        return [RunSpec(name="mpirun FindSourceMPI", command=argv, env=env, **common)]

    def collect(self, job: JobInput) -> Catalog:
        return read_caesar_catalogs(job.workdir, job.image)


@functools.lru_cache(maxsize=8)
def _does_not_run(findsource: str, mtime_ns: int) -> str | None:
    """Why FindSource cannot run (a missing ROOT library, a wrong binary), from its --help; None when it can. Asked
    once per binary and modification time."""
    try:
        result = subprocess.run([findsource, "--help"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "it did not answer --help within 30 s"
    except OSError as exc:
        return exc.strerror or str(exc)
    if result.returncode == 0 and "Usage" in result.stdout + result.stderr:
        return None
    said = (result.stderr.strip() or result.stdout.strip()).splitlines()
    return f"'{findsource} --help' exited with {result.returncode}" + (f": {said[-1][:300]}" if said else "")


def config_values(rule: ConfigRule, value: Any) -> dict[str, str]:
    """The config lines of one option: caesar-rest's own when it is left at its default."""
    option = rule.option
    if not rule.keys:
        return {}
    if isinstance(option, Flag):
        text = rule.written if value else rule.absent
    elif value == option.default and rule.absent is not None:
        text = rule.absent
    elif rule.codes is not None:
        text = str(rule.codes[value])
    elif isinstance(value, bool) or isinstance(value, str):
        text = str(value)
    else:
        text = repr(value)
    written = {key: text for key in rule.keys if text is not None}
    if rule.also and value != option.default:
        written.update(rule.also)
    return written


def _outside_accepted(rule: ConfigRule, value: Any) -> str | None:
    """FindSource ignores, without a word, a value outside its open range: say so instead."""
    if rule.accepted is None or value == rule.option.default:
        return None
    low, high, builtin = rule.accepted
    number = rule.codes[value] if rule.codes is not None else value
    if low < number < high:
        return None
    shown = f"{value} (code {number})" if rule.codes is not None else str(value)
    return (
        f"caesar ignores {shown}: it accepts only values strictly between {low:g} and {high:g} and would use "
        f"its built-in {builtin}"
    )


def read_caesar_catalogs(folder: Path, image: Path) -> Catalog:
    """caesar's JSON catalogs (full precision; the .dat files round) as normalized islands, nested sources and
    components. caesar lists its nested sources (``S<n>_N<k>``) beside the islands they lie in, whose pixels and
    flux include theirs: they are their own level here, so that an island is counted once. Components belong to
    the island they lie in, fitted in it or in one of its nested sources. caesar writes no catalog when it finds
    nothing, and the component catalog only when fitting is on."""
    header = fits.getheader(image)
    wcs = celestial_wcs(header)
    sources = _load(folder / "catalog.json", "sources")
    components = _load(folder / "catalog_fitcomp.json", "components")
    top = [s for s in sources if s.get("nest_level", 0) == 0]
    nested = [s for s in sources if s.get("nest_level", 0) > 0]
    island_ids = {s["name"]: n for n, s in enumerate(top, 1)}

    def island_of(name: str) -> int:
        return island_ids.get(name.split("_N", 1)[0], 0)

    members = [island_of(c["name"]) for c in components]
    island_table = normalized_table(
        "islands", "caesar", _with_sky(_island_values(top, range(1, len(top) + 1)), wcs) if top else {}
    )
    island_table["n_components"] = [members.count(n) for n in island_table["island_id"]]
    nested_values = _island_values(nested, range(1, len(nested) + 1))
    nested_values.update(nest_level=[s["nest_level"] for s in nested], parent_id=[island_of(s["name"]) for s in nested])
    nested_table = normalized_table("nested", "caesar", _with_sky(nested_values, wcs) if nested else {})
    if not components:
        return Catalog(island_table, normalized_table("components", "caesar", {}), nested_table)
    x, y = np.array([c["x0"] for c in components]), np.array([c["y0"] for c in components])
    ra, dec = wcs.all_pix2world(x, y, 0)
    # caesar's pa is the major axis from the image's +y axis, anticlockwise; its pa_wcs is wrong on NCP and AZP
    # images (up to 90 deg), so sizes and position angle on the sky come from the fitted pixel ellipse and the WCS
    pixel = {key: np.array([c[key] for c in components]) for key in ("bmaj", "bmin", "pa", "bmajErr", "bminErr")}
    major, minor, pa = sky_ellipses(x, y, pixel["bmaj"], pixel["bmin"], pixel["pa"] + 90.0, wcs)
    # caesar's own deconvolved sizes are in the same wrong frame as its pa_wcs: taken out of ours instead
    beam = (header["BMAJ"] * 3600.0, header["BMIN"] * 3600.0, header.get("BPA", 0.0)) if "BMAJ" in header else None
    major_d, minor_d, pa_d = deconvolved(major, minor, pa, beam) if beam else (np.full(len(x), np.nan),) * 3
    component_table = normalized_table(
        "components",
        "caesar",
        {
            "component_id": range(1, len(components) + 1),
            "island_id": members,
            "name": [f"{c['name']}_fitcomp{c['componentId']}" for c in components],
            "x": x,
            "y": y,
            "ra": ra,
            "dec": dec,
            "ra_err": np.array([c["x0Err_wcs"] for c in components]) * 3600.0 * np.cos(np.deg2rad(dec)),  # on the sky
            "dec_err": [c["y0Err_wcs"] * 3600.0 for c in components],
            "peak_flux": [c["A"] for c in components],
            "peak_flux_err": [c["Aerr"] for c in components],
            "int_flux": [c["fluxDensity"] / c["beamArea"] for c in components],
            "int_flux_err": [c["fluxDensityErr"] / c["beamArea"] for c in components],
            "major": major,
            "major_err": pixel["bmajErr"] * major / pixel["bmaj"],
            "minor": minor,
            "minor_err": pixel["bminErr"] * minor / pixel["bmin"],
            "pa": pa,
            "pa_err": [c["paErr"] for c in components],
            "major_deconv": major_d,
            "minor_deconv": minor_d,
            "pa_deconv": pa_d,
            "local_rms": [c["bkgRMSSum"] / c["nPix"] for c in components],
            "background": [c["bkgSum"] / c["nPix"] for c in components],
            "flags": [c["fitQuality"] for c in components],
        },
        wcs,
    )
    return Catalog(island_table, component_table, nested_table)


def _island_values(sources: list[dict[str, Any]], ids: range) -> dict[str, Any]:
    """The island columns of caesar sources: the pixel statistics are those of each source's (single) island."""
    islands = [s["islands"][0] for s in sources]
    return {
        "island_id": ids,
        "name": [s["name"] for s in sources],
        "x": [i["x"] for i in islands],
        "y": [i["y"] for i in islands],
        "n_components": [(i.get("fit_info") or {}).get("ncomponents", 0) for i in islands],
        "npix": [i["npix"] for i in islands],
        "peak_flux": [i["Smax"] for i in islands],
        "int_flux": [i["Stot"] for i in islands],  # in Jy in the JSON (Jy/beam summed in the .dat)
        "local_rms": [i.get("rms", np.nan) for i in islands],
        "background": [i.get("bkg", np.nan) for i in islands],
    }


def _with_sky(values: dict[str, Any], wcs: WCS) -> dict[str, Any]:
    ra, dec = wcs.all_pix2world(np.asarray(values["x"], float), np.asarray(values["y"], float), 0)
    return {**values, "ra": ra, "dec": dec}


def _load(path: Path, key: str) -> list[dict[str, Any]]:
    return json.loads(path.read_text())[key] if path.exists() else []


def _load_metadata(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()).get("metadata", {}).get("inputdata", {}) if path.exists() else {}
