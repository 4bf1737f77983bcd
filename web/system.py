"""Liveness of the appliance: GET /caesar/api/v1.0/health."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from litestar import Response, get
from litestar.di import NamedDependency

from appliance.core import Appliance
from web.files import API


@get(f"{API}/health", tags=["system"], summary="Health of the database and the queue")
async def health(appliance: NamedDependency[Appliance]) -> Response[dict[str, Any]]:
    """200 with ``ok: true`` when the database answers at the current schema and the queue consumer runs; 503
    otherwise. Also reports the version, uptime and free space on the data disk."""
    report = await anyio.to_thread.run_sync(appliance.health)
    return Response(report, status_code=200 if report["ok"] else 503)
