"""caesar-rest's app routes: the list of apps and each app's option schema."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath

from appliance.apps import App
from appliance.core import Appliance
from web.errors import refusals
from web.files import API


class OptionDescription(msgspec.Struct, omit_defaults=True):
    """One option of an app, in caesar-rest's describe shape; numbers have min and max, choices allowed_values."""

    mandatory: bool
    type: str  # "int", "float", "str", or "none" for a flag
    description: str
    advanced: int
    category: str
    subcategory: str
    enum: bool
    default: Any
    min: int | float | None | msgspec.UnsetType = msgspec.UNSET
    max: int | float | None | msgspec.UnsetType = msgspec.UNSET
    allowed_values: list[Any] | msgspec.UnsetType = msgspec.UNSET


class RunnerFit(msgspec.Struct):
    available: bool
    reason: str | None


class AppSummary(msgspec.Struct):
    name: str
    title: str
    description: str
    available: bool  # on its own runner
    reason: str | None  # why it cannot run there
    runner: str  # the runner its jobs use unless they name one
    image: str | None  # the container image it runs in on runners with containers
    runners: dict[str, RunnerFit]  # whether it can run on each runner, and why not


class AppList(msgspec.Struct):
    apps: list[str]
    details: dict[str, AppSummary]


class AppDetail(msgspec.Struct):
    name: str
    title: str
    description: str
    available: bool
    reason: str | None
    runner: str
    image: str | None
    runners: dict[str, RunnerFit]
    options: dict[str, OptionDescription]


class RunnerSummary(msgspec.Struct):
    name: str
    available: bool
    reason: str | None  # why it cannot run steps now
    capabilities: dict[str, bool]  # durable, containers, shared_filesystem, gpus
    capacity_cores: int | None  # cores its runs may hold at once (null: its cluster's queue decides)
    cores_busy: int  # held by its jobs now
    runs_running: int
    runs_queued: int  # submitted, waiting in its backend's queue
    jobs_pending: int  # waiting here for its cores
    default: bool  # jobs whose app names no runner run here


def _app_summary(appliance: Appliance, app: App) -> AppSummary:
    availability = appliance.jobs.app_availability(app)
    runners = {name: RunnerFit(fit.available, fit.reason) for name, fit in appliance.jobs.app_runners(app).items()}
    return AppSummary(app.name, app.title, app.description, availability.available, availability.reason,
                      appliance.jobs.default_runner(app), app.image or None, runners)  # fmt: skip


def _options(app: App) -> dict[str, OptionDescription]:
    return msgspec.convert(app.describe(), dict[str, OptionDescription])


class AppsController(Controller):
    path = API
    tags = ["apps"]

    @get("/apps", summary="The apps (source finders) of this appliance", responses=refusals())
    async def list_apps(self, appliance: NamedDependency[Appliance]) -> AppList:
        """``apps`` lists the names, as caesar-rest does; ``details`` says for each whether it can run here and, if
        not, why."""
        apps = appliance.apps.apps
        return AppList(apps=list(apps), details={name: _app_summary(appliance, app) for name, app in apps.items()})

    @get("/runners", summary="Where jobs can run", responses=refusals())
    async def list_runners(self, appliance: NamedDependency[Appliance]) -> list[RunnerSummary]:
        """Every runner of the entry-point group caesar_appliance.runners: whether it can run steps now and, if not,
        why; its capabilities; its load. POST /job takes one by ``name`` as ``runner``."""
        listed = await anyio.to_thread.run_sync(appliance.engine.overview)
        return [RunnerSummary(**runner) for runner in listed]

    @get(
        "/app/{name:str}/describe",
        summary="An app's options, in caesar-rest's describe shape",
        responses=refusals(404),
    )
    async def describe(
        self, appliance: NamedDependency[Appliance], name: FromPath[str]
    ) -> dict[str, OptionDescription]:
        """Keyed by option name: mandatory, type ("none" for flags), description, advanced, category, subcategory,
        enum, default, and min/max or allowed_values."""
        return _options(appliance.apps.get(name))

    @get("/app/{name:str}", summary="An app: availability and options", responses=refusals(404))
    async def get_app(self, appliance: NamedDependency[Appliance], name: FromPath[str]) -> AppDetail:
        app = appliance.apps.get(name)
        summary = _app_summary(appliance, app)
        return AppDetail(**msgspec.structs.asdict(summary), options=_options(app))
