"""Server-sent events of the token stream, each one `data: <json>` and a blank line."""

from __future__ import annotations

import json
from typing import Any

from rbee_worker.backends.base import GenerationResult

DONE = b"data: [DONE]\n\n"


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


def started(job_id: str, model: str) -> bytes:
    return _event({"type": "started", "job_id": job_id, "model": model})


def token(text: str, index: int) -> bytes:
    return _event({"type": "token", "t": text, "i": index})


def end(result: GenerationResult, decode_time_ms: int) -> bytes:
    return _event(
        {
            "type": "end",
            "tokens_out": result.tokens_out,
            "decode_time_ms": decode_time_ms,
            "stop_reason": result.stop_reason.value,
        }
    )


def error(code: str, message: str) -> bytes:
    return _event({"type": "error", "code": code, "message": message})
