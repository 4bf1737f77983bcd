"""What routes read from a request besides the path: JSON object bodies and paging parameters, each bounded so that
no input can overflow SQLite's integers or Python's recursion."""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from litestar import Request
from litestar.exceptions import SerializationException
from litestar.params import QueryParameter

from appliance.errors import InvalidRequest

# JSON's safe integer range: every client can represent it, and SQLite's 64-bit integers hold any sum of two.
MAX_OFFSET = 2**53 - 1
MAX_JSON_DEPTH = 32

Offset = Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET, description="How many to skip")]
Limit = Annotated[int, QueryParameter(ge=1, le=1000, description="How many to return at most")]
PageNumber = Annotated[int, QueryParameter(name="page", ge=1, le=MAX_OFFSET // 1000)]


_FIELD = re.compile(r"field `([^`]+)`|at `\$\.([^`]+)`")


async def json_object_body(request: Request) -> None:
    """The before_request hook of routes whose ``data`` is a msgspec Struct: the body must be a JSON object nested at
    most MAX_JSON_DEPTH deep (else ``invalid_json``) that decodes strictly into that Struct; a field that does not is
    refused with ``missing_<field>`` or ``invalid_<field>`` (or the Struct's ``error_codes[field]``), an unknown field
    with ``invalid_request``. Litestar then converts the same parsed body into the handler's ``data``."""
    try:
        body = await request.json() if await request.body() else None
    except RecursionError:
        raise InvalidRequest("invalid_json", f"the body is nested more than {MAX_JSON_DEPTH} levels deep") from None
    except SerializationException as exc:
        raise InvalidRequest("invalid_json", f"the body is not JSON: {exc.detail}") from None
    except UnicodeDecodeError as exc:  # msgspec's answer to a string that is not UTF-8
        raise InvalidRequest("invalid_json", f"the body is not JSON: not UTF-8 at byte {exc.start}") from None
    if _depth_exceeds(body, MAX_JSON_DEPTH):
        raise InvalidRequest("invalid_json", f"the body is nested more than {MAX_JSON_DEPTH} levels deep")
    shape = request.route_handler.parsed_fn_signature.parameters["data"].annotation
    if not isinstance(body, dict):
        raise InvalidRequest("invalid_json", f"the body must be a JSON object: {_fields(shape)}")
    try:
        msgspec.convert(body, shape, strict=True)
    except msgspec.ValidationError as exc:
        raise _field_error(shape, str(exc)) from None


def _fields(shape: type[msgspec.Struct]) -> str:
    return "{" + ", ".join(f'"{name}": ...' for name in shape.__struct_fields__) + "} (see /docs)"


def _field_error(shape: type[msgspec.Struct], problem: str) -> InvalidRequest:
    match = _FIELD.search(problem)
    path = (match.group(1) or match.group(2)) if match else ""
    field = re.split(r"[.\[]", path, maxsplit=1)[0]
    if problem.startswith("Object contains unknown field"):
        return InvalidRequest("invalid_request", f"unknown field {field!r}: the body is {_fields(shape)}")
    codes: dict[str, str] = getattr(shape, "error_codes", {})
    missing = problem.startswith("Object missing required field") or (path == field and "got `null`" in problem)
    code = codes.get(field) or f"{'missing' if missing else 'invalid'}_{field}"
    return InvalidRequest(code, f"{field}: {problem}")


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether value nests lists or objects more than limit deep, found without recursion."""
    level = [value]
    for _ in range(limit):
        level = [
            child
            for item in level
            if isinstance(item, dict | list)
            for child in (item.values() if isinstance(item, dict) else item)
        ]
        if not level:
            return False
    return any(isinstance(item, dict | list) for item in level)
