"""Login: every route but the public ones needs the API token (``Authorization: Bearer``) or a session cookie.

A browser gets its cookie from ``/login?key=<login key>``, which the launcher opens for the user; a key logs in once.
A request carried only by the cookie and changing something, whatever its method (caesar-rest deletes and cancels
with GET), must come from one of our own pages: its Origin is this server, or the browser says the request is
same-origin or typed by the user. So another site, or another local server on a different port (same site for the
browser, so SameSite cookies do not stop it), cannot act through the user's browser."""

from __future__ import annotations

import logging
from http.cookies import SimpleCookie
from typing import Annotated
from urllib.parse import parse_qs

import msgspec
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType, ScopeType
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.middleware import ASGIMiddleware
from litestar.params import Body, FromQuery, QueryParameter
from litestar.response import Redirect, Template
from litestar.types import ASGIApp, Receive, Scope, Send

from appliance.access import LOGIN_LINK_ROUTE, Access
from appliance.core import Appliance
from web.dashboard import page
from web.errors import refusals

log = logging.getLogger(__name__)

PUBLIC_PREFIXES = ("/static/", "/docs", "/login", "/caesar/api/v1.0/health")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SESSION_ENDED = (
    "Your session has ended: a session lasts until the appliance stops, and it has restarted since you logged in "
    "(or you logged out in another tab). Log in again."
)
CHANGES_STATE = {"changes_state": True}  # route opt of a GET route that changes something


def cookie_name(scope: Scope) -> str:
    """Cookies do not keep ports apart, so two appliances on one machine must not share a cookie name."""
    server = scope.get("server") or ("", 0)
    return f"caesar_appliance_session_{server[1]}"


def _bearer(headers: dict[bytes, bytes], query: bytes) -> str | None:
    value = headers.get(b"authorization", b"").decode("latin-1")
    if value[:7].lower() == "bearer ":
        return value[7:].strip()
    tokens = parse_qs(query.decode("latin-1")).get("access_token")  # caesar-rest also took the token from the query
    return tokens[0] if tokens else None


def _session(headers: dict[bytes, bytes], name: str) -> str | None:
    cookies = SimpleCookie()
    try:
        cookies.load(headers.get(b"cookie", b"").decode("latin-1"))
    except Exception:  # a malformed Cookie header is the same as none
        return None
    morsel = cookies.get(name)
    return morsel.value if morsel else None


def _same_origin(headers: dict[bytes, bytes]) -> bool:
    """Only positive evidence counts: a request that says nothing of where it comes from is refused."""
    origin = headers.get(b"origin", b"").decode("latin-1")
    if origin:
        host = headers.get(b"host", b"").decode("latin-1")
        return origin in (f"http://{host}", f"https://{host}")
    return headers.get(b"sec-fetch-site") in (b"same-origin", b"none")


def _changes_state(scope: Scope) -> bool:
    if scope["method"] not in SAFE_METHODS:
        return True
    handler = scope.get("route_handler")
    return handler is not None and bool(handler.opt.get("changes_state"))


class LoginRequired(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    def __init__(self, access: Access) -> None:
        self.access = access

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        path = scope["path"]
        if not self.access.required or path.startswith(PUBLIC_PREFIXES):
            await next_app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        token = _bearer(headers, scope.get("query_string", b""))
        if token is not None:
            if not self.access.token_valid(token):
                raise NotAuthorizedException(
                    f"the API token is not valid: this appliance's is printed by "
                    f"'caesar-appliance token --home {self.access.token_path.parent}'",
                    headers={"WWW-Authenticate": "Bearer"},
                )
        else:
            session = _session(headers, cookie_name(scope))
            if session is None or not self.access.session_valid(session):
                raise NotAuthorizedException(
                    "log in: send the API token as 'Authorization: Bearer <token>' "
                    f"('caesar-appliance token --home {self.access.token_path.parent}' prints it)",
                    headers={"WWW-Authenticate": "Bearer"},
                    extra={"session_ended": session is not None},  # the login page says why
                )
            if _changes_state(scope) and not _same_origin(headers):
                raise PermissionDeniedException(
                    "this request did not come from the appliance's own pages; scripts send the API token"
                )
        await next_app(scope, receive, send)


def _safe_next(target: str | None) -> str:
    """Only paths of this server: never '//elsewhere' or 'http://elsewhere'."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@get("/login", include_in_schema=False, sync_to_thread=False)
def login(request: Request, appliance: NamedDependency[Appliance], key: FromQuery[str | None] = None,
          next_path: Annotated[str | None, QueryParameter(name="next")] = None,
          ended: FromQuery[bool] = False) -> Response | Template:  # fmt: skip
    """The launcher's link: trade its login key for a session cookie and go on to the page asked for; without a key,
    the login form (saying why, when the browser's session had ended)."""
    if key is None:
        why = SESSION_ENDED if ended else None
        return page("Log in", "", "login.html", next=_safe_next(next_path), message=why, message_kind="info")
    return _log_in(request, appliance, key, next_path)


@post("/login", include_in_schema=False, sync_to_thread=False)
def login_form(request: Request, appliance: NamedDependency[Appliance],
               data: Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]) -> Response | Template:  # fmt: skip
    """The login form: the key travels in the body, never in an address (history, logs)."""
    return _log_in(request, appliance, data.get("key", ""), data.get("next"))


def _log_in(request: Request, appliance: Appliance, key: str, next_path: str | None) -> Response | Template:
    target = _safe_next(next_path)
    session = appliance.access.login(key.strip())
    client = request.client.host if request.client else ""
    if session is None:
        log.info("login refused", extra={"action": "login", "client": client, "http_status": 401})
        return page("Log in", "", "login.html", status_code=401, next=target, message_kind="error",
                    message="That key is not valid, or it was used already: a login key logs in once. Run "
                            "caesar-appliance again, or choose Open dashboard in its tray menu, for a new link.")  # fmt: skip
    response = Redirect(target, status_code=303)
    response.set_cookie(cookie_name(request.scope), session, httponly=True, samesite="strict", path="/")
    log.info("login", extra={"action": "login", "client": client})
    return response


@post("/logout", include_in_schema=False, status_code=303, sync_to_thread=False)
def logout(request: Request, appliance: NamedDependency[Appliance]) -> Redirect:
    name = cookie_name(request.scope)
    session = request.cookies.get(name)
    if session:
        appliance.access.logout(session)
    response = Redirect("/login", status_code=303)
    response.delete_cookie(name, path="/")
    return response


class LoginLink(msgspec.Struct):
    login: str


@post(
    LOGIN_LINK_ROUTE,
    tags=["system"],
    status_code=200,
    sync_to_thread=False,
    summary="A new login link for a browser",
    responses=refusals(403),
)
def login_link(request: Request, appliance: NamedDependency[Appliance]) -> LoginLink:
    """A link that logs one browser into the dashboard, once (what a second launch of the desktop appliance opens)."""
    base = f"{request.url.scheme}://{request.headers.get('host', '')}"
    return LoginLink(login=appliance.access.login_link(base))
