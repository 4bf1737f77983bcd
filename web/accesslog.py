"""The access log: one line per request that changed something or was refused, and, at debug level, every read.

It replaces uvicorn's access log, which wrote whole request lines (with their query strings) for every request:
the query is written redacted (``?access_token=[redacted]``), and a status poll from a script does not cost a log
line at the default level (formatting and writing it was a fifth of the time such a request took)."""

from __future__ import annotations

import logging
import time

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from appliance.logs import redact

log = logging.getLogger("web.access")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees when the app fails before answering

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            level = logging.INFO if status >= 400 or scope["method"] not in SAFE_METHODS else logging.DEBUG
            if log.isEnabledFor(level):
                query = scope.get("query_string", b"").decode("latin-1")
                client = scope.get("client") or ("", 0)
                log.log(
                    level,
                    "%s %s %d",
                    scope["method"],
                    redact(scope["path"] + (f"?{query}" if query else "")),
                    status,
                    extra={
                        "client": client[0],
                        "http_status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    },
                )
