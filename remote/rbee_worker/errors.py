"""The error envelope every non-2xx answer uses, the same as the queen's."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

INVALID_REQUEST = "INVALID_REQUEST"
WORKER_LOADING = "WORKER_LOADING"
ALL_SLOTS_BUSY = "ALL_SLOTS_BUSY"
MODEL_LOAD_FAILED = "MODEL_LOAD_FAILED"
INFERENCE_FAILED = "INFERENCE_FAILED"
REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
VRAM_OOM = "VRAM_OOM"  # the GPU ran out of memory for one request; the worker goes on


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    correlation_id: str = "",
) -> JSONResponse:
    body = {
        "error": {
            "code": code,
            "message": message,
            "details": details or {},
            # The queen's id for the request that led here, when it sent one.
            "correlation_id": correlation_id,
        }
    }
    return JSONResponse(body, status_code=status)


def one_line(exc: BaseException) -> str:
    """An exception as one short line for a person: logs and answers stay one line each."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:500]
