"""Every error leaves as JSON {"status": <message>, "error": <code>} with its HTTP code; never a traceback."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode, urlsplit

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import ResponseSpec
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
    errors.FilesRefused: 422,
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


class RefusedFile(msgspec.Struct, omit_defaults=True):
    """A file an app refused to run on, and why."""

    uuid: str
    filename_orig: str
    error: str
    status: str
    options: dict[str, str] | msgspec.UnsetType = msgspec.UNSET  # each option invalid for this file


class ErrorBody(msgspec.Struct, omit_defaults=True):
    """Every refusal: what is wrong, for people, and a stable code, for programs; some say more (the details of a
    domain error, each a field here: tests/test_openapi.py checks that every one raised is)."""

    status: str
    error: str
    state: str | msgspec.UnsetType = msgspec.UNSET  # a refused job submission is ABORTED, as in caesar-rest
    options: dict[str, str] | msgspec.UnsetType = msgspec.UNSET  # each invalid job option and what is wrong
    job_id: str | msgspec.UnsetType = msgspec.UNSET  # the job whose outputs do not exist yet
    jobs: list[str] | msgspec.UnsetType = msgspec.UNSET  # the live jobs that use the file
    files: list[RefusedFile] | msgspec.UnsetType = msgspec.UNSET  # each file jobs were refused on, and why
    details: list[dict[str, Any]] | dict[str, Any] | msgspec.UnsetType = msgspec.UNSET  # each invalid parameter


REFUSALS = {
    202: "The job has not ended yet: its outputs do not exist yet (`job_not_completed`)",
    400: "The request is malformed: a parameter, the body or the Host header",
    401: "No API token, or not this appliance's (`Authorization: Bearer <token>`)",
    403: "A request carried only by a session cookie that did not come from the appliance's own pages",
    404: "No such file, job, comparison, app or output for this user",
    409: "It clashes with the current state (a file a live job uses, a live job, a request still running with the "
    "same Idempotency-Key)",
    413: "The body is larger than the limit",
    415: "Not a FITS file (by name or content), or not the media type this route takes",
    416: "The range asked for is outside the file",
    422: "Understood but unusable: a corrupt or truncated FITS file, invalid job options, an app that cannot run here "
    "or on some of the files asked for (`files_refused`, each under `files`), an Idempotency-Key reused for another "
    "request",
    507: "The data disk cannot take it",
}


def refusals(*statuses: int) -> dict[int, ResponseSpec]:
    """The OpenAPI answers of a route that refuses with these statuses (and 400 and 401, which every route can)."""
    return {
        status: ResponseSpec(ErrorBody, description=REFUSALS[status], generate_examples=False)
        for status in sorted({400, 401, *statuses})
    }


def error_body(message: str, code: str, **extra: Any) -> ErrorBody:
    return ErrorBody(status=message, error=code, **extra)


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
