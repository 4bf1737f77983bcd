"""Live pages over server-sent events: each stream re-renders its fragment when a job changes (the queue's change
feed wakes it), sends only what differs, and ends when the appliance stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from markupsafe import escape

from appliance.core import Appliance
from appliance.jobs import JOB_LOG
from appliance.models import TERMINAL_JOB_STATES
from web.dashboard import jobs_context, overview_context, readable_log, status_context, whole_lines
from web.params import MAX_OFFSET, PageNumber

KEEPALIVE_SECONDS = 15.0
LOG_POLL_SECONDS = 1.0  # a running job's log grows without state changes


def render(request: Request, template: str, context: dict[str, Any]) -> str:
    return request.app.template_engine.get_template(template).render(**context)


async def changes(appliance: Appliance, wait: float = KEEPALIVE_SECONDS) -> AsyncGenerator[bool, None]:
    """Yields True after each change, False after ``wait`` seconds without one, until the appliance stops."""
    async with appliance.jobs.changes.subscribe() as changed:
        yield True
        while not appliance.jobs.stopping:
            try:
                await asyncio.wait_for(changed.wait(), timeout=wait)
            except TimeoutError:
                yield False
                continue
            changed.clear()
            yield True


async def fragments(request: Request, appliance: Appliance, render_all: Callable[[], dict[str, str]],
                    refresh_when_idle: bool = False) -> AsyncGenerator[ServerSentEventMessage, None]:  # fmt: skip
    """One event per fragment whose HTML changed; a comment now and then keeps idle connections open. With
    ``refresh_when_idle`` the fragments are also re-rendered when nothing changed (the machine's load moves on)."""
    sent: dict[str, str] = {}
    async for changed in changes(appliance):
        if not changed:
            yield ServerSentEventMessage(comment="keepalive")
            if not refresh_when_idle:
                continue
        for event, html in (await anyio.to_thread.run_sync(render_all)).items():
            if sent.get(event) != html:
                sent[event] = html
                yield ServerSentEventMessage(event=event, data=html)


class EventsController(Controller):
    path = "/events"
    include_in_schema = False

    @get("/overview")
    async def overview(self, request: Request, appliance: NamedDependency[Appliance],
                       user: NamedDependency[str]) -> ServerSentEvent:  # fmt: skip
        def render_all() -> dict[str, str]:
            context = overview_context(appliance, user)
            return {"queue": render(request, "fragments/queue.html", context),
                    "recent": render(request, "fragments/jobs_table.html", context)}  # fmt: skip

        return ServerSentEvent(fragments(request, appliance, render_all, refresh_when_idle=True))

    @get("/jobs")
    async def jobs(self, request: Request, appliance: NamedDependency[Appliance], user: NamedDependency[str],
                   job_state: Annotated[str | None, QueryParameter(name="state")] = None,
                   app: FromQuery[str | None] = None, tag: FromQuery[str | None] = None,
                   page_number: PageNumber = 1) -> ServerSentEvent:  # fmt: skip
        def render_all() -> dict[str, str]:
            context = jobs_context(appliance, user, job_state, app, tag, page_number)
            return {"jobs": render(request, "fragments/jobs_table.html", context)
                    + render(request, "fragments/pager.html", context)}  # fmt: skip

        return ServerSentEvent(fragments(request, appliance, render_all))

    @get("/jobs/{job_id:str}")
    async def job(self, request: Request, appliance: NamedDependency[Appliance], user: NamedDependency[str],
                  job_id: FromPath[str], start: Annotated[int, QueryParameter(name="from", ge=0, le=MAX_OFFSET)] = 0,
                  ) -> ServerSentEvent:  # fmt: skip
        """``status`` (the state block, with the finder's progress and the typical run time) at each change and
        every LOG_POLL_SECONDS, ``log`` with the whole lines the log gained after byte
        ``from`` (where the page's copy ends), ``done`` at the end. Every event's id is the log byte reached, so a
        browser that reconnects (it sends the last id back) gets every line exactly once."""
        job = await anyio.to_thread.run_sync(appliance.jobs.get, user, job_id)
        log_path = appliance.jobs.folder(job) / JOB_LOG
        resumed = request.headers.get("last-event-id", "")
        offset = int(resumed) if resumed.isdigit() and len(resumed) < 19 else start

        async def stream() -> AsyncGenerator[ServerSentEventMessage, None]:
            nonlocal offset
            sent = ""
            async for _ in changes(appliance, wait=LOG_POLL_SECONDS):
                current = await anyio.to_thread.run_sync(appliance.jobs.get, user, job_id)
                ended = current.state in TERMINAL_JOB_STATES  # read first: the log is complete before the state
                context = await anyio.to_thread.run_sync(status_context, appliance, user, current)
                html = render(request, "fragments/job_status.html", context)
                if html != sent:
                    sent = html
                    yield ServerSentEventMessage(event="status", data=html, id=str(offset))
                added = await anyio.to_thread.run_sync(_log_after, log_path, offset, ended)
                if added:
                    offset += len(added)
                    yield ServerSentEventMessage(event="log", data=str(escape(readable_log(added))), id=str(offset))
                if ended:
                    yield ServerSentEventMessage(event="done", data=current.state, id=str(offset))
                    return

        return ServerSentEvent(stream())


def _log_after(path: Path, offset: int, ended: bool) -> bytes:
    """What the log holds after ``offset``: whole lines while the job runs, everything once it has ended."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return b""
    return data if ended else whole_lines(data)
