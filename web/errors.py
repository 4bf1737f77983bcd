"""Every error leaves as JSON {"status": <message>, "error": <code>} with its HTTP code; never a traceback."""

from __future__ import annotations

import logging
from urllib.parse import urlencode, urlsplit

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from appliance import errors

log = logging.getLogger(__name__)

HTTP_STATUS: dict[type[errors.ApplianceError], int] = {
    errors.NotReady: 202,
    errors.InvalidRequest: 400,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.TooLarge: 413,
    errors.UnsupportedType: 415,
    errors.InvalidContent: 422,
    errors.InvalidOptions: 422,
    errors.KeyReused: 422,
    errors.Unavailable: 422,
    errors.InsufficientStorage: 507,
}

_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


def wants_page(request: Request) -> bool:
    """A browser asking for a dashboard page gets an error page; scripts and the API get JSON."""
    path = request.url.path
    return not path.startswith(("/caesar/api", "/docs", "/static", "/events")) and "text/html" in request.headers.get(
        "accept", ""
    )


def to_login(request: Request, session_ended: bool = False) -> Response:
    """A browser without a session goes to the login page, and back to where it was afterwards; the page says why
    when the browser had a session that ended. htmx, asking for a piece of a page, is told to move the whole page
    (HX-Redirect)."""
    why = {"ended": "1"} if session_ended else {}
    if request.headers.get("hx-request"):
        here = urlsplit(request.headers.get("hx-current-url", "/"))
        target = "/login?" + urlencode({"next": here.path + (f"?{here.query}" if here.query else ""), **why})
        return Response(b"", status_code=401, headers={"HX-Redirect": target})
    page = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return Redirect("/login?" + urlencode({"next": page if request.method == "GET" else "/", **why}), status_code=303)


def error_page(title: str, detail: str, status: int) -> Template:
    return Template("error.html", context={"title": title, "detail": detail, "section": ""}, status_code=status)


def error_body(message: str, code: str, **extra: object) -> dict[str, object]:
    return {"status": message, "error": code, **extra}


def http_status_of(exc: errors.ApplianceError) -> int:
    for kind in type(exc).__mro__:
        if kind in HTTP_STATUS:
            return HTTP_STATUS[kind]
    return HTTP_500_INTERNAL_SERVER_ERROR


def error_response(request: Request, exc: errors.ApplianceError, **extra: object) -> Response | Template:
    """The JSON reply for a domain error, with the error's details (e.g. each invalid option) and ``extra``."""
    status = http_status_of(exc)
    if status >= 400:
        log.info(
            "request refused",
            extra={"action": "refuse", "path": request.url.path, "error": exc.code, "http_status": status},
        )
        if wants_page(request):
            return error_page("Not found" if status == 404 else "Refused", exc.message, status)
    return Response(error_body(exc.message, exc.code, **exc.details, **extra), status_code=status)


def domain_error(request: Request, exc: errors.ApplianceError) -> Response | Template:
    return error_response(request, exc)


def http_error(request: Request, exc: HTTPException) -> Response | Template:
    status = exc.status_code
    if status >= 500:
        return unexpected_error(request, exc)
    extra = {"details": exc.extra} if isinstance(exc, ValidationException) and exc.extra else {}
    if status == 401 and wants_page(request):
        return to_login(request, session_ended=isinstance(exc.extra, dict) and bool(exc.extra.get("session_ended")))
    if wants_page(request):
        return error_page(exc.detail, exc.detail, status)
    return Response(
        error_body(exc.detail, _HTTP_CODES.get(status, "http_error"), **extra),
        status_code=status,
        headers=exc.headers,
    )


def unexpected_error(request: Request, exc: Exception) -> Response | Template:
    log.error("unexpected error", exc_info=exc, extra={"path": request.url.path, "method": request.method})
    if wants_page(request):
        return error_page("Something went wrong", "an internal error: the appliance log has the details", 500)
    return Response(
        error_body("internal error: the appliance log has the details", "internal_error"),
        status_code=HTTP_500_INTERNAL_SERVER_ERROR,
    )


EXCEPTION_HANDLERS = {
    errors.ApplianceError: domain_error,
    HTTPException: http_error,
    Exception: unexpected_error,
}
