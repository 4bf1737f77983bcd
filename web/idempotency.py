"""The Idempotency-Key header on the routes that create something (uploads, jobs, comparisons): a retry with the
same key and the same request gets the first answer again, marked ``Idempotent-Replayed: true``."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import anyio.to_thread
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.openapi.spec import OpenAPIHeader, Operation, Parameter, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from appliance.idempotency import MAX_KEY_LENGTH, Answer, IdempotencyKeys

IDEMPOTENT = {"idempotent": True}  # route opt: the route takes an Idempotency-Key
MAX_KEPT_BODY = 1 << 20  # the answers of these routes are small documents; a bigger one is not kept
_BOUNDARY = re.compile(rb'boundary="?([^";,\s]+)"?', re.IGNORECASE)
_NOT_REPLAYED = {b"date", b"set-cookie", b"content-length"}


@dataclass
class IdempotentOperation(Operation):
    """The OpenAPI operation of a route that takes an Idempotency-Key (the routes with the IDEMPOTENT opt)."""

    def __post_init__(self) -> None:
        key = Parameter(
            name="Idempotency-Key",
            param_in="header",
            required=False,
            description="Send the same key with the same request again to get the first answer instead of doing it "
            "twice (24 hours); another request with the key is refused with 422, one while the first runs with 409",
            schema=Schema(type=OpenAPIType.STRING, min_length=1, max_length=MAX_KEY_LENGTH, pattern="^[ -~]+$"),
        )
        self.parameters = [*(self.parameters or []), key]
        replayed = OpenAPIHeader(
            schema=Schema(type=OpenAPIType.STRING, const="true"), description="This is the first answer, sent again"
        )
        for status, answer in (self.responses or {}).items():
            if status.startswith("2") and not isinstance(answer, dict):
                answer.headers = {**(answer.headers or {}), "Idempotent-Replayed": replayed}


class Idempotency(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    def __init__(self, keys: IdempotencyKeys, user: str) -> None:
        self.keys = keys
        self.user = user

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        headers = dict(scope["headers"])
        key = headers.get(b"idempotency-key")
        if key is None or not scope["route_handler"].opt.get("idempotent"):
            await next_app(scope, receive, send)
            return
        key_text = key.decode("latin-1")
        operation = f"{scope['method']} {scope['path']}"
        first = await anyio.to_thread.run_sync(self.keys.claim, self.user, key_text, operation)
        digest = RequestDigest(scope.get("query_string", b""), headers.get(b"content-type", b""))
        if first is not None:
            while not digest.complete and await digest.read(receive):
                pass
            self.keys.check(key_text, first, digest.hexdigest())
            await _replay(send, first)
            return
        answer = AnswerCopy(send)
        try:
            await next_app(scope, lambda: digest.read(receive), answer.send)
        except BaseException:
            await anyio.to_thread.run_sync(self.keys.release, self.user, key_text)
            raise
        if digest.complete and answer.keepable:
            kept = Answer(digest.hexdigest(), answer.status_code, answer.headers, b"".join(answer.body))
            await anyio.to_thread.run_sync(self.keys.keep, self.user, key_text, kept)
        else:
            await anyio.to_thread.run_sync(self.keys.release, self.user, key_text)


class RequestDigest:
    """SHA-256 of the query and the body as the app reads it. A multipart body is hashed without its boundary,
    which a client draws anew for every attempt."""

    def __init__(self, query: bytes, content_type: bytes) -> None:
        self._sha = hashlib.sha256(query + b"\0")
        match = _BOUNDARY.search(content_type) if content_type.lower().startswith(b"multipart/") else None
        self._boundary = match.group(1) if match else b""
        self._tail = b""
        self.complete = False

    async def read(self, receive: Receive) -> Message:
        message = await receive()
        if message["type"] == "http.request":
            self._update(message.get("body", b""), message.get("more_body", False))
        return message

    def _update(self, body: bytes, more: bool) -> None:
        if self._boundary:
            data = (self._tail + body).replace(self._boundary, b"")
            cut = max(0, len(data) - (len(self._boundary) - 1)) if more else len(data)
            body, self._tail = data[:cut], data[cut:]
        self._sha.update(body)
        self.complete = not more

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


class AnswerCopy:
    """Sends the app's answer on, keeping a copy of a successful one."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status_code = 0
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self._size = 0
        self._complete = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status_code = message["status"]
            self.headers = [
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in message.get("headers", [])
                if name.lower() not in _NOT_REPLAYED
            ]
        elif message["type"] == "http.response.body":
            chunk = message.get("body", b"")
            self._size += len(chunk)
            if self._size <= MAX_KEPT_BODY:
                self.body.append(chunk)
            self._complete = not message.get("more_body", False)
        await self._send(message)

    @property
    def keepable(self) -> bool:
        """Only what changed something is kept: a refusal changed nothing, and a retry may succeed."""
        return self._complete and 200 <= self.status_code < 300 and self._size <= MAX_KEPT_BODY


async def _replay(send: Send, answer: Answer) -> None:
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers]
    headers += [(b"content-length", str(len(answer.body)).encode()), (b"idempotent-replayed", b"true")]
    await send({"type": "http.response.start", "status": answer.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})
