"""Host header check: only this machine's names (and IP literals) are served, which defeats DNS rebinding.

A rebinding attack always reaches us under the attacker's host name, never under an IP literal, so every IP
literal is accepted; names must be loopback names, the bound host, the machine's name in lab mode, or listed."""

from __future__ import annotations

import ipaddress
import json
import socket

from litestar.types import ASGIApp, Receive, Scope, Send

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_ADDRESSES = frozenset({"0.0.0.0", "::", ""})


def allowed_host_names(bind_host: str, extra: tuple[str, ...]) -> frozenset[str]:
    names = set(LOOPBACK_NAMES) | {name.lower() for name in extra}
    if bind_host in WILDCARD_ADDRESSES:
        hostname = socket.gethostname().lower()
        names |= {hostname, socket.getfqdn(hostname).lower()}
    else:
        names.add(bind_host.lower())
    return frozenset(names)


def _host_name(header: str) -> str:
    header = header.strip().lower()
    if header.startswith("["):  # [::1]:8765
        return header[1 : header.find("]")] if "]" in header else header
    if header.count(":") == 1:
        header = header.split(":", 1)[0]
    return header.rstrip(".")


class HostCheck:
    """ASGI middleware answering 400 JSON to any request whose Host is not one of ``names``."""

    def __init__(self, app: ASGIApp, names: frozenset[str]) -> None:
        self.app = app
        self.names = names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = dict(scope["headers"])
            host = _host_name(headers.get(b"host", b"").decode("latin-1"))
            if host not in self.names and not _is_ip_literal(host):
                await _refuse(scope, send, host)
                return
        await self.app(scope, receive, send)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _refuse(scope: Scope, send: Send, host: str) -> None:
    body = json.dumps(
        {
            "status": f"Host {host or '(none)'!r} is not served here; use http://127.0.0.1 or add the name to "
            "allowed_hosts",
            "error": "host_not_allowed",
        }
    ).encode()
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 400,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
