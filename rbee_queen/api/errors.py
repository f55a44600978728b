"""One handler renders every error as the envelope; correlation ids per request."""

from __future__ import annotations

import logging
import secrets

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from rbee_queen.errors import NotFound, RbeeError

log = logging.getLogger("rbee.queen.api")


def correlation_id(request: Request) -> str:
    cid = getattr(request.state, "correlation_id", None)
    if cid is None:
        cid = request.headers.get("x-correlation-id", "")[:64] or secrets.token_hex(8)
        if not cid.replace("-", "").isalnum():
            cid = secrets.token_hex(8)
        request.state.correlation_id = cid
    return cid


def error_response(request: Request, exc: RbeeError) -> JSONResponse:
    cid = correlation_id(request)
    headers = {"x-correlation-id": cid}
    return JSONResponse(exc.envelope(cid), status_code=exc.status, headers=headers)


async def rbee_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RbeeError)
    if exc.status >= 500:
        log.warning("%s %s -> %s: %s", request.method, request.url.path, exc.code, exc.message)
    return error_response(request, exc)


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    error = NotFound("no such route") if exc.status_code == 404 else RbeeError(exc.detail)
    error.status = exc.status_code  # type: ignore[misc]
    return error_response(request, error)


async def unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(request, RbeeError("internal error; see the queen's log"))
