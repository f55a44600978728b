"""The JSON encoding every boundary uses, written once.

Server-sent events are `data: <json>` and a blank line, ending with
`data: [DONE]`; the helper's RPC is one JSON object a line. Text stays as
UTF-8 (no `\\uXXXX` escapes), so a token's bytes are what the model wrote.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

SSE_PREFIX = b"data: "
SSE_DONE = b"data: [DONE]\n\n"


def encode(message: Mapping[str, Any]) -> str:
    """One message as JSON text."""
    return json.dumps(message, ensure_ascii=False)


def encode_line(message: Mapping[str, Any]) -> str:
    """One message as a JSON line (the helper's RPC)."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")) + "\n"


def sse(message: Mapping[str, Any]) -> bytes:
    """One message as a server-sent event."""
    return SSE_PREFIX + encode(message).encode() + b"\n\n"


def decode_object(text: str | bytes) -> dict[str, Any] | None:
    """A JSON object, or None for anything else (bad JSON, a list, a number)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def sse_messages(body: bytes) -> list[dict[str, Any]]:
    """Every whole JSON object in a run of server-sent events (`[DONE]` and
    anything that is not an object skipped)."""
    found = []
    for line in body.split(b"\n"):
        if line.startswith(SSE_PREFIX + b"{"):
            message = decode_object(line[len(SSE_PREFIX) :])
            if message is not None:
                found.append(message)
    return found
