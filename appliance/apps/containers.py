"""Apps that run only inside container images, as caesar-rest ran them: CuTEx and the Mask R-CNN detector.

They are declared with caesar-rest's options and images so that clients see the same schema, and run through
caesar-rest's job-image contract, so that a lab that has those images uses them unchanged: the image's own command
(run_job.sh) with the options as ``--name=value`` arguments in ``JOB_OPTIONS``, the input in ``INPUTFILE``, and the
job folder in ``JOB_DIR`` and ``JOB_OUTDIR``; its outputs are found by caesar-rest's names. They are available on
runners with containers (``"runner": "container"``, their default) once the image is present."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table

from appliance.apps import App, Availability, JobInput
from appliance.apps.options import Flag, OptionSchema, Value
from appliance.catalogs import Catalog, normalized_table, sky_ellipses
from appliance.errors import Unavailable
from appliance.fitsimage import celestial_wcs
from runners import Resources, RunSpec

JOB_DIR = "/job"  # where container runners mount the job folder


def job_options(options: dict[str, Any], schema: OptionSchema) -> str:
    """caesar-rest's JOB_OPTIONS: each option as ``--name=value``, a flag as ``--name`` when set."""
    words = []
    for name, value in options.items():
        if isinstance(schema.options.get(name), Flag):
            if value:
                words.append(f"--{name}")
        else:
            words.append(f"--{name}={value}")
    return " ".join(words)


class ContainerApp(App):
    runner = "container"

    def availability(self) -> Availability:
        return Availability(
            False, f'runs only in its container image {self.image}: submit it with "runner": "container"'
        )

    def check_input(self, summary: dict[str, Any], options: dict[str, Any], target: Any = None) -> None:
        if not summary.get("celestial_wcs"):
            super().check_input(summary, options, target)

    def steps(self, job: JobInput) -> list[RunSpec]:
        if not job.in_container:
            raise Unavailable("app_unavailable", self.availability().reason or f"{self.name} cannot run here")
        env = {
            "JOB_OPTIONS": job_options(job.options, self.schema),
            "INPUTFILE": f"{JOB_DIR}/{job.image.name}",
            "JOB_DIR": JOB_DIR,
            "JOB_OUTDIR": JOB_DIR,
        }
        return [
            RunSpec(name=f"{self.name} job image", command=[], workdir=job.workdir, inputs=(job.image.name,), env=env,
                    resources=Resources(cores=job.cores), image=self.image)
        ]  # fmt: skip

    def collect(self, job: JobInput) -> Catalog:
        raise Unavailable("app_unavailable", f"the outputs of {self.name} cannot be read by this appliance yet")


def job_image_catalog(workdir: Path, prefix: str, key: str) -> list[dict[str, Any]]:
    """The rows of the JSON catalog a job image wrote under caesar-rest's name (``<prefix>-<stem>.json``,
    ``{key: [...]}``); FileNotFoundError naming what was looked for when there is none."""
    found = sorted(workdir.glob(f"{prefix}-*.json"))
    if not found:
        raise FileNotFoundError(f"the job image wrote no {prefix}-*.json in its output folder")
    return json.loads(found[0].read_text())[key]


class Cutex(ContainerApp):
    name = "cutex"
    title = "CuTEx"
    description = "CuTEx (curvature thresholding extractor) in GDL, from the caesar-rest job image."
    image = "sriggi/cutex-job:latest"
    schema = OptionSchema(
        [
            Value("seedthr", "detection threshold on the curvature, in sigma", category="SOURCE-FINDING",
                  default=5.0),
            Value("npixmin", "minimum pixels of a source", category="SOURCE-FINDING", value_type=int, default=4,
                  min=1, max=10000),
            Value("npixpsf", "pixels per PSF", category="SOURCE-FINDING", default=2.7),
            Value("psflimmin", "smallest fitted size, as a fraction of the guessed size", category="FITTING",
                  default=0.5),
            Value("psflimmax", "largest fitted size, as a fraction of the guessed size", category="FITTING",
                  default=2.0),
            Flag("no-logredir", "accepted for caesar-rest compatibility", advanced=True),
        ]
    )  # fmt: skip

    def collect(self, job: JobInput) -> Catalog:
        """caesar-rest's names: ``catalog-<stem>.json`` the sources (islands, under "sources"),
        ``catalog_fitcomp-<stem>.json`` their components (under "components"), each row with 0-based pixel ``x, y``, ``peak_flux`` (Jy/beam), ``int_flux`` (Jy), FWHM
        ``fwhm_a, fwhm_b`` (pixels) at ``pa`` (degrees from +x towards +y). Sky positions and sizes are computed here
        from the image's WCS."""
        wcs = celestial_wcs(fits.getheader(job.image))
        sources = job_image_catalog(job.workdir, "catalog", "sources")
        components = job_image_catalog(job.workdir, "catalog_fitcomp", "components")
        return Catalog(
            islands=_cutex_table("islands", sources, wcs, self.name),
            components=_cutex_table("components", components, wcs, self.name),
        )


def _cutex_table(kind: str, rows: list[dict[str, Any]], wcs: Any, app: str) -> Table:
    if not rows:
        return normalized_table(kind, app, {})
    column = {name: np.array([row[name] for row in rows], dtype=float) for name in
              ("x", "y", "peak_flux", "int_flux", "fwhm_a", "fwhm_b", "pa")}  # fmt: skip
    ids = [int(row["id"]) for row in rows]
    ra, dec = wcs.all_pix2world(column["x"], column["y"], 0)
    values: dict[str, Any] = {"x": column["x"], "y": column["y"], "ra": ra, "dec": dec,
                              "peak_flux": column["peak_flux"], "int_flux": column["int_flux"]}  # fmt: skip
    if kind == "islands":
        values.update(island_id=ids, name=ids, n_components=[1] * len(rows),
                      npix=[int(row.get("npix", 0)) for row in rows])  # fmt: skip
    else:
        major, minor, pa = sky_ellipses(column["x"], column["y"], column["fwhm_a"], column["fwhm_b"], column["pa"], wcs)
        values.update(component_id=ids, island_id=ids, name=ids, major=major, minor=minor, pa=pa)
    return normalized_table(kind, app, values)


class Mrcnn(ContainerApp):
    name = "mrcnn"
    title = "Mask R-CNN detector"
    description = "SKA-INAF's Mask R-CNN source detector (caesar-mrcnn), from the caesar-rest job image."
    image = "sriggi/mrcnn-detect:latest"

    schema = OptionSchema(
        [
            Value("scoreThr", "minimum detection score", category="DETECT", default=0.7, min=0.0, max=1.0),
            Value("iouThr", "intersection-over-union threshold for merging detections", category="DETECT",
                  default=0.6, min=0.0, max=1.0),
        ]
    )  # fmt: skip

    def container_availability(self) -> Availability:
        return Availability(False, "the detector runs in its job image, but this appliance cannot read its outputs yet")
