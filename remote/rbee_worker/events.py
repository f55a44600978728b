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


def end(result: GenerationResult, decode_time_ms: int, first_token_ms: int | None) -> bytes:
    payload: dict[str, Any] = {
        "type": "end",
        "tokens_out": result.tokens_out,
        "decode_time_ms": decode_time_ms,
        "stop_reason": result.stop_reason.value,
    }
    if result.stop_sequence is not None:
        payload["stop_sequence_matched"] = result.stop_sequence
    seconds = decode_time_ms / 1000
    payload["usage"] = {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.tokens_out,
        "total_tokens": result.prompt_tokens + result.tokens_out,
        "time_to_first_token_ms": first_token_ms,
        "tokens_per_second": round(result.tokens_out / seconds, 1) if seconds > 0 else None,
    }
    return _event(payload)


def error(code: str, message: str) -> bytes:
    return _event({"type": "error", "code": code, "message": message})
