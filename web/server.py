"""The HTTP server: uvicorn with httptools, with request bodies handed to the app without copies and per-connection
buffers sized for multi-GiB bodies."""

from __future__ import annotations

import asyncio
from collections import deque
from http import HTTPStatus

import msgspec
import uvicorn
from litestar import Litestar
from litestar.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from web.accesslog import AccessLog
from web.errors import error_body

BUFFER_BYTES = 4 << 20
MAX_URL_BYTES = 16 << 10  # far beyond any route and query the appliance has; browsers stop near 64 KiB


class ChunkCycle(RequestResponseCycle):
    """uvicorn's request cycle, passing the body on as the pieces the socket gave (a few hundred KiB each).

    uvicorn appends every piece to one buffer and copies that buffer again into the message it gives the app: two
    copies of every byte, in fresh memory, on the event loop's thread, which cost about 1 s per GiB uploaded here.
    Handing over the pieces themselves costs nothing; a fast app takes them one by one."""

    chunks: deque[bytes]
    buffered: int

    async def receive(self):  # type: ignore[no-untyped-def]
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiting_for_100_continue = False
        if not self.chunks and not self.disconnected and not self.response_complete:
            self.flow.resume_reading()
            await self.message_event.wait()
            self.message_event.clear()
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        body = self.chunks.popleft() if self.chunks else b""
        self.buffered -= len(body)
        if self.buffered <= BUFFER_BYTES:
            self.flow.resume_reading()
        return {"type": "http.request", "body": body, "more_body": bool(self.chunks) or self.more_body}


class BulkTransferProtocol(HttpToolsProtocol):
    """uvicorn stops reading a request body after every 64 KiB until the app takes it, and stops the app's writes
    after 64 KiB of unsent response. For a 1 GiB upload or download that is ~16k pause/resume cycles, which cost more
    than the transfer itself (upload through a no-op app: 2.1 s with 64 KiB, 0.8 s with 4 MiB). Buffering up to
    4 MiB per connection removes that overhead; the memory bound stays constant per connection."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        transport.set_write_buffer_limits(high=BUFFER_BYTES)

    refusal: tuple[int, str, str] | None = None

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > MAX_URL_BYTES:
            self.refusal = (414, "uri_too_long", f"the URL is longer than {MAX_URL_BYTES} bytes")
            raise ValueError(self.refusal[2])  # the parser stops; data_received answers with send_400_response
        super().on_url(url)

    def send_400_response(self, msg: str) -> None:
        """What the HTTP parser refuses (a malformed request line, a bad Content-Length, headers too big, a URL too
        long) gets the JSON error every other refusal gets, where uvicorn would answer in plain text."""
        status, code, message = self.refusal or (400, "invalid_request", "the request is not valid HTTP/1.1")
        body = msgspec.json.encode(error_body(message, code))
        self.transport.write(
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()
            + b"content-type: application/json\r\n"
            + f"content-length: {len(body)}\r\n".encode()
            + b"connection: close\r\n\r\n"
            + body
        )
        self.transport.close()

    def on_headers_complete(self) -> None:
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is not previous:  # a new request (not an upgrade): its cycle hands over pieces
            self.cycle.__class__ = ChunkCycle
            self.cycle.chunks = deque()
            self.cycle.buffered = 0

    def on_body(self, body: bytes) -> None:
        # uvicorn's on_body, queueing the piece instead of appending it to a buffer, with BUFFER_BYTES in place of
        # its 64 KiB HIGH_WATER_LIMIT
        if (self.parser.should_upgrade() and self._should_upgrade()) or self.cycle.response_complete:
            return
        cycle = self.cycle
        cycle.chunks.append(body)
        cycle.buffered += len(body)
        if cycle.buffered > BUFFER_BYTES:
            self.flow.pause_reading()
        cycle.message_event.set()


def make_server(app: Litestar, shutdown_grace_seconds: float) -> uvicorn.Server:
    # the access log is outside the app, so it sees the status of every answer, refusals included
    return uvicorn.Server(server_config(AccessLog(app), shutdown_grace_seconds))


def server_config(app: ASGIApp, shutdown_grace_seconds: float) -> uvicorn.Config:
    """uvicorn as the appliance runs it (one process, this protocol), for any ASGI app (the API benchmark serves a
    bare one with it)."""
    return uvicorn.Config(
        app,
        http=BulkTransferProtocol,
        log_config=None,
        access_log=False,  # web.accesslog writes it, redacted
        lifespan="on",
        timeout_graceful_shutdown=max(1, round(shutdown_grace_seconds)),
        server_header=False,
    )
