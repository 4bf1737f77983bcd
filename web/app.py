"""The Litestar application: routes, the appliance as a dependency, errors as JSON, offline docs, static files."""

from __future__ import annotations

from pathlib import Path

from litestar import Litestar
from litestar.di import NamedDependency, Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.htmx import HTMXPlugin
from litestar.static_files import create_static_files_router

from appliance import __version__
from appliance.core import Appliance
from web.apps import AppsController
from web.auth import LoginRequired, login, login_form, login_link, logout
from web.compare import CompareController
from web.comparison_pages import ComparisonPagesController
from web.dashboard import TEMPLATE_CONFIG, DashboardController
from web.errors import EXCEPTION_HANDLERS
from web.events import EventsController
from web.files import FilesController
from web.hosts import HostCheck, allowed_host_names
from web.idempotency import Idempotency
from web.jobs import JobsController
from web.system import health

STATIC = Path(__file__).with_name("static")
SWAGGER = "/static/vendor/swagger-ui"
JSON_BODY_LIMIT = 1 << 20
TOKEN_HELP = "The API token: `caesar-appliance token` prints it (kept in <home>/api-token)."
# routes that stream uploads lift this themselves


def create_app(appliance: Appliance) -> Litestar:
    settings = appliance.settings
    return Litestar(
        route_handlers=[
            DashboardController,
            ComparisonPagesController,
            EventsController,
            FilesController,
            AppsController,
            JobsController,
            CompareController,
            health,
            login,
            login_form,
            login_link,
            logout,
            create_static_files_router(path="/static", directories=[STATIC], include_in_schema=False),
        ],
        # "user" is taken from "appliance" so that Litestar resolves the two one after the other: it resolves a
        # route's independent dependencies concurrently, in a task group started for each request, which cost a
        # status poll ~70 us, as much as all the rest the app does for it
        dependencies={
            "appliance": Provide(lambda: appliance, use_cache=True, sync_to_thread=False),
            "user": Provide(_user, use_cache=True, sync_to_thread=False),
        },
        on_startup=[appliance.start],
        on_shutdown=[appliance.stop],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[
            DefineMiddleware(HostCheck, names=allowed_host_names(settings.host, settings.allowed_hosts)),
            LoginRequired(appliance.access),
            Idempotency(appliance.idempotency_keys, settings.user),
        ],
        request_max_body_size=JSON_BODY_LIMIT,
        openapi_config=OpenAPIConfig(
            title="caesar-appliance",
            version=__version__,
            description="Find and catalogue sources in radio-astronomy FITS images. "
            "The routes under /caesar/api/v1.0 keep caesar-rest's paths and field names.",
            path="/docs",
            components=Components(
                security_schemes={"token": SecurityScheme(type="http", scheme="bearer", description=TOKEN_HELP)}
            ),
            security=[{"token": []}],
            render_plugins=[
                SwaggerRenderPlugin(
                    path="/",
                    js_url=f"{SWAGGER}/swagger-ui-bundle.js",
                    css_url=f"{SWAGGER}/swagger-ui.css",
                    standalone_preset_js_url=f"{SWAGGER}/swagger-ui-standalone-preset.js",
                    favicon=f"<link rel='icon' type='image/png' href='{SWAGGER}/favicon-32x32.png'>",
                )
            ],
        ),
        template_config=TEMPLATE_CONFIG,
        plugins=[HTMXPlugin()],
        logging_config=None,
    )


def _user(appliance: NamedDependency[Appliance]) -> str:
    return appliance.settings.user
