"""Reading JSON request bodies with a size limit and a nesting limit."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from rbee_queen.errors import InvalidRequest, PayloadTooLarge

MAX_BODY_BYTES = 1_000_000
# No request of the API nests deeper than a few levels; past this a body is
# refused before anything walks it (Python's parser would hit its recursion
# limit near 1000 and every later walk would too).
MAX_JSON_DEPTH = 32


async def json_body(request: Request) -> Any:
    # From the raw headers: Starlette's `Headers` cost more than the rest of
    # this on an inference's path.
    declared = next((v for k, v in request.scope["headers"] if k == b"content-length"), None)
    if declared and declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"request body over {MAX_BODY_BYTES} bytes")
    data = bytearray()
    async for chunk in request.stream():
        data.extend(chunk)
        if len(data) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"request body over {MAX_BODY_BYTES} bytes")
    return parse_json(data or b"{}")


def parse_json(data: bytes | bytearray) -> Any:
    """`data` as JSON, refused (400) when malformed or nested past MAX_JSON_DEPTH."""
    # Counting brackets is C-fast: a body with few cannot be deep, so the walk
    # below runs only for bodies that might be.
    deep = data.count(b"[") + data.count(b"{") > MAX_JSON_DEPTH
    try:
        value = json.loads(data)
    except RecursionError:
        raise _too_deep() from None
    except ValueError:
        raise InvalidRequest("request body is not valid JSON") from None
    if deep and depth(value) > MAX_JSON_DEPTH:
        raise _too_deep()
    return value


def _too_deep() -> InvalidRequest:
    return InvalidRequest(
        f"request body nests deeper than {MAX_JSON_DEPTH} levels",
        fields=[{"field": "body", "constraint": "max_depth", "message": "nested too deep"}],
    )


def depth(value: Any) -> int:
    """How deep arrays and objects nest in `value`, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level > MAX_JSON_DEPTH:
                return level
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest
