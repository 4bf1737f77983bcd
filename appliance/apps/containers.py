"""Apps that run only inside container images, as caesar-rest ran them: CuTEx and the Mask R-CNN detector.

They are declared with caesar-rest's options and images so that clients see the same schema; they become
available when a runner named "container" (docker or podman) is installed in the entry-point group
caesar_appliance.runners."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from appliance.apps import App, Availability, JobInput
from appliance.apps.options import Flag, OptionSchema, Value
from appliance.catalogs import Catalog
from appliance.errors import Unavailable
from runners import ENTRY_POINT_GROUP, RunSpec


class ContainerApp(App):
    image: str

    def availability(self) -> Availability:
        if not entry_points(group=ENTRY_POINT_GROUP, name="container"):
            return Availability(
                False,
                f"runs in the container image {self.image}, and this appliance has no container runner (docker or "
                "podman) installed",
            )
        return Availability(True)

    def check_input(self, summary: dict[str, Any], options: dict[str, Any]) -> None:
        if not summary.get("celestial_wcs"):
            super().check_input(summary, options)

    def steps(self, job: JobInput) -> list[RunSpec]:
        raise Unavailable("app_unavailable", self.availability().reason or f"{self.name} cannot run here")

    def collect(self, job: JobInput) -> Catalog:
        raise Unavailable("app_unavailable", self.availability().reason or f"{self.name} cannot run here")


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
