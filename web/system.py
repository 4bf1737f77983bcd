"""Liveness of the appliance: GET /caesar/api/v1.0/health."""

from __future__ import annotations

from typing import Literal

import anyio.to_thread
import msgspec
from litestar import Response, get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec

from appliance.core import Appliance
from web.files import API


class Health(msgspec.Struct):
    ok: bool
    version: str
    uptime_seconds: float
    database: str  # "ok", "schema out of date" or "error: <why>"
    queue: Literal["running", "paused", "stopped"]
    disk: Literal["ok", "low", "full"]  # low: below disk_reserve_bytes
    disk_free_bytes: int
    disk_total_bytes: int


@get(
    f"{API}/health",
    tags=["system"],
    summary="Health of the database and the queue",
    security=[{}],
    responses={
        503: ResponseSpec(Health, description="Not ok: the database, the queue or the disk", generate_examples=False)
    },
)
async def health(appliance: NamedDependency[Appliance]) -> Response[Health]:
    """200 with ``ok: true`` when the database answers at the current schema and the queue consumer runs; 503
    otherwise. Also reports the version, uptime and free space on the data disk. Needs no login."""
    report = Health(**await anyio.to_thread.run_sync(appliance.health))
    return Response(report, status_code=200 if report.ok else 503)
