"""caesar-rest's app routes: the list of apps and each app's option schema."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath

from appliance.apps import App
from appliance.core import Appliance
from web.files import API


def _app_summary(app: App) -> dict[str, Any]:
    availability = app.availability()
    return {
        "name": app.name,
        "title": app.title,
        "description": app.description,
        "available": availability.available,
        "reason": availability.reason,
    }


class AppsController(Controller):
    path = API
    tags = ["apps"]

    @get("/apps", summary="The apps (source finders) of this appliance")
    async def list_apps(self, appliance: NamedDependency[Appliance]) -> dict[str, Any]:
        """``apps`` lists the names, as caesar-rest does; ``details`` says for each whether it can run here and, if
        not, why."""
        apps = appliance.apps.apps
        return {"apps": list(apps), "details": {name: _app_summary(app) for name, app in apps.items()}}

    @get("/app/{name:str}/describe", summary="An app's options, in caesar-rest's describe shape")
    async def describe(self, appliance: NamedDependency[Appliance], name: FromPath[str]) -> dict[str, Any]:
        """Keyed by option name: mandatory, type ("none" for flags), description, advanced, category, subcategory,
        enum, default, and min/max or allowed_values."""
        return appliance.apps.get(name).describe()

    @get("/app/{name:str}", summary="An app: availability and options")
    async def get_app(self, appliance: NamedDependency[Appliance], name: FromPath[str]) -> dict[str, Any]:
        app = appliance.apps.get(name)
        return {**_app_summary(app), "options": app.describe()}
