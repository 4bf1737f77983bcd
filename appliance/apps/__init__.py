"""Apps: the source finders a job can run. Each app declares its options (caesar-rest's describe shape), checks an
input image, turns validated options into the commands to run, and turns the finder's own files into the
normalized catalog."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance import __version__
from appliance.apps.options import Flag, OptionSchema, Value
from appliance.catalogs import Catalog
from appliance.config import Settings
from appliance.errors import ConfigError, InvalidContent, InvalidOptions, NotFound
from runners import Availability, RunSpec

if TYPE_CHECKING:
    from appliance.engine import Target


# The image `./manage image` builds with this appliance's own finders (aegean, pybdsf, sep) and its lock.
FINDERS_IMAGE = f"caesar-appliance-finders:{__version__}"


def beam_options(category: str = "BEAM") -> list[Value]:
    """beam-bmaj, beam-bmin, beam-bpa: a restoring beam that replaces the header's (0: use the header)."""
    return [
        Value(
            "beam-bmaj",
            "restoring beam major axis FWHM to use instead of the header's (arcsec; 0: header)",
            category=category,
            default=0.0,
            min=0.0,
            max=36000.0,
            advanced=True,
        ),
        Value(
            "beam-bmin",
            "restoring beam minor axis FWHM (arcsec; 0: same as beam-bmaj)",
            category=category,
            default=0.0,
            min=0.0,
            max=36000.0,
            advanced=True,
        ),
        Value(
            "beam-bpa",
            "restoring beam position angle (deg east of north)",
            category=category,
            default=0.0,
            min=-180.0,
            max=180.0,
            advanced=True,
        ),
    ]


def catalog_options(category: str = "CATALOG") -> list[Flag]:
    """drop_outside: what the appliance does with the rows every finder's catalog gets."""
    return [
        Flag(
            "drop_outside",
            "leave out sources centred outside the image or on blank (NaN) pixels (else keep them, flagged in "
            "appliance_flags)",
            category=category,
            default=True,
        )
    ]


@dataclass(frozen=True)
class JobInput:
    """What an app gets to build and to collect a run."""

    image: Path  # the prepared 2-D image in the job folder
    summary: dict[str, Any]  # FitsSummary of the uploaded file, as a dict
    options: dict[str, Any]  # validated, defaults filled
    workdir: Path
    log: Path
    cores: int
    target: Target | None = None  # where its steps run (None: this machine)
    notes: list[str] = field(default_factory=list)  # what building the steps has to say in the job log

    @property
    def in_container(self) -> bool:
        return self.target is not None and self.target.containers


@dataclass(frozen=True)
class Child:
    """A job a job runs as one of its parts (a tile of a mosaic): an app, its options, a registered file."""

    app: str
    job_inputs: dict[str, Any]
    data_inputs: str


class App:
    name: str
    title: str
    description: str
    schema: OptionSchema
    python_modules: tuple[str, ...] = ()
    fits_gaussians = False  # its components are fitted Gaussians: the appliance makes the residual image
    maps: dict[str, str] = {}  # maps the finder leaves in the job folder on the image's grid: layer -> file name
    # what the finder's own ``flags`` mean: bits (each set bit adds its meaning) or one value per row
    flags_are_bits: bool = True
    flag_legend: dict[int, str] = {}
    # the lines of the finder's output that say how far it has got (appliance.progress reads the last one): named
    # groups ``stage`` (else the whole match), ``done`` and ``total``
    progress_lines: tuple[re.Pattern[str], ...] = ()
    # its WCS code reads projection parameters (PV terms): those that ignore them get NCP as NCP, not as astropy's
    # equivalent SIN with PV terms
    reads_pv_terms: bool = True
    # the runner its jobs use unless they name one ("": the appliance's ``runner`` setting), and the container image
    # it runs in on runners that use one; both settings of [apps.<name>]
    runner: str = ""
    image: str = ""
    setting_names: tuple[str, ...] = ("runner", "image")

    def configure(self, values: dict[str, Any]) -> None:
        """Take this app's ``[apps.<name>]`` settings."""
        for key, value in values.items():
            if key not in self.setting_names:
                raise ConfigError(
                    f"[apps.{self.name}]: unknown setting {key!r} (known: {', '.join(self.setting_names)})"
                )
            if not isinstance(value, str):
                raise ConfigError(f"[apps.{self.name}] {key} must be a string, got {value!r}")
            if value or key == "runner":  # an empty image keeps the app's own
                setattr(self, key, value)

    def availability(self) -> Availability:
        missing = [m for m in self.python_modules if importlib.util.find_spec(m) is None]
        if missing:
            return Availability(False, f"Python package(s) {', '.join(missing)} not installed")
        return Availability(True)

    def container_availability(self) -> Availability:
        """Whether it can run in its image, the image aside (a runner with containers checks that)."""
        return Availability(True)

    def cores(self, options: dict[str, Any]) -> int:
        return int(options.get("ncores") or 1)

    def beam_override(self, options: dict[str, Any]) -> tuple[float, float, float] | None:
        """(bmaj arcsec, bmin arcsec, bpa deg) given in the options, or None to use the header's."""
        bmaj, bmin = options.get("beam-bmaj") or 0.0, options.get("beam-bmin") or 0.0
        if bmaj > 0:
            return bmaj, bmin or bmaj, options.get("beam-bpa") or 0.0
        return None

    def beam_fallback(self, options: dict[str, Any]) -> tuple[float, float, float] | None:
        """(bmaj arcsec, bmin arcsec, bpa deg) to use only when the header has no beam."""
        return None

    def check_input(self, summary: dict[str, Any], options: dict[str, Any], target: Target | None = None) -> None:
        """Refuse, before anything runs, options that contradict each other or an image this finder cannot use
        (where it runs: ``target``)."""
        if "mergethr" in options and options["mergethr"] >= options["seedthr"]:
            raise InvalidOptions({"mergethr": f"must be below seedthr ({options['seedthr']})"})
        if options.get("bkgbox") and options.get("bkggrid", 0) > options["bkgbox"]:
            raise InvalidOptions({"bkggrid": f"must not exceed bkgbox ({options['bkgbox']})"})
        if not summary.get("celestial_wcs"):
            raise InvalidContent(
                "no_celestial_wcs", f"{self.name} needs an image with a celestial WCS (RA/Dec axes); this one has none"
            )
        if summary.get("beam") is None and self.beam_override(options) is None:
            raise InvalidContent(
                "no_beam",
                f"the image header has no restoring beam (BMAJ/BMIN); give it with the options beam-bmaj and "
                f"beam-bmin (arcsec) to run {self.name}",
            )

    def children(self, job: JobInput) -> list[Child]:
        """The child jobs this job runs as, when it is split (a mosaic into tiles); then it has no steps of its own,
        and ``collect`` merges what its children found. [] for a job that runs its own steps."""
        return []

    def steps(self, job: JobInput) -> list[RunSpec]:
        raise NotImplementedError

    def collect(self, job: JobInput) -> Catalog:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return self.schema.describe()


class AppRegistry:
    """The apps of this appliance, configured from its settings."""

    def __init__(self, settings: Settings) -> None:
        from appliance.apps.aegean import Aegean
        from appliance.apps.caesar import Caesar
        from appliance.apps.containers import Cutex, Mrcnn
        from appliance.apps.pybdsf import PyBDSF
        from appliance.apps.sepfinder import Sep

        apps: list[App] = [
            Caesar(settings.caesar_findsource, settings.cores), Aegean(), PyBDSF(), Sep(), Cutex(), Mrcnn(),
        ]  # fmt: skip
        self.apps = {app.name: app for app in apps}
        for name, values in settings.apps.items():
            if name not in self.apps:
                raise ConfigError(f"[apps.{name}]: no app named {name!r} (known: {', '.join(self.apps)})")
            if not isinstance(values, dict):
                raise ConfigError(f"[apps.{name}] must be a table")
            self.apps[name].configure(values)

    def __contains__(self, name: object) -> bool:
        return name in self.apps

    def get(self, name: str) -> App:
        app = self.apps.get(name) if isinstance(name, str) else None
        if app is None:
            raise NotFound("unknown_app", f"Unknown app {name}!")
        return app
