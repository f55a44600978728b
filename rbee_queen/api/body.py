"""Reading JSON request bodies with a size limit."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from rbee_queen.errors import InvalidRequest, PayloadTooLarge

MAX_BODY_BYTES = 1_000_000


async def json_body(request: Request) -> Any:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"request body over {MAX_BODY_BYTES} bytes")
    data = bytearray()
    async for chunk in request.stream():
        data.extend(chunk)
        if len(data) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"request body over {MAX_BODY_BYTES} bytes")
    try:
        return json.loads(data or b"{}")
    except ValueError:
        raise InvalidRequest("request body is not valid JSON") from None
