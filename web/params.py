"""What routes read from a request besides the path: JSON object bodies and paging parameters, each bounded so that
no input can overflow SQLite's integers or Python's recursion."""

from __future__ import annotations

import json
from typing import Annotated, Any

from litestar import Request
from litestar.params import QueryParameter

from appliance.errors import InvalidRequest

# JSON's safe integer range: every client can represent it, and SQLite's 64-bit integers hold any sum of two.
MAX_OFFSET = 2**53 - 1
MAX_JSON_DEPTH = 32

Offset = Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET, description="How many to skip")]
Limit = Annotated[int, QueryParameter(ge=1, le=1000, description="How many to return at most")]
PageNumber = Annotated[int, QueryParameter(name="page", ge=1, le=MAX_OFFSET // 1000)]


async def json_object(request: Request, shape: str) -> dict[str, Any]:
    """The body as a JSON object nested at most MAX_JSON_DEPTH deep, else InvalidRequest; shape shows what is wanted."""
    try:
        body = json.loads(await request.body() or b"null")
    except RecursionError:
        body = None
        too_deep = True
    except ValueError as exc:
        raise InvalidRequest("invalid_json", f"the body is not JSON: {exc}") from None
    else:
        too_deep = _depth_exceeds(body, MAX_JSON_DEPTH)
    if too_deep:
        raise InvalidRequest("invalid_json", f"the body is nested more than {MAX_JSON_DEPTH} levels deep")
    if not isinstance(body, dict):
        raise InvalidRequest("invalid_json", f"the body must be a JSON object: {shape}")
    return body


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
