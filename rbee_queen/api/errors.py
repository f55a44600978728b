"""One handler renders every error as the envelope; correlation ids per request."""

from __future__ import annotations

import logging
import math
import secrets

from peewee import InterfaceError, OperationalError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from rbee_queen.errors import (
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    RbeeError,
    StoreUnavailable,
)

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
    headers = {"x-correlation-id": cid, **retry_after(exc)}
    return JSONResponse(exc.envelope(cid), status_code=exc.status, headers=headers)


def retry_after(exc: RbeeError) -> dict[str, str]:
    """`Retry-After` for an error that says when a retry may succeed
    (`details.retry_after_s`, e.g. NODE_HELD_ELSEWHERE); none otherwise."""
    seconds = exc.details.get("retry_after_s")
    if not isinstance(seconds, (int, float)):
        return {}
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


async def rbee_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RbeeError)
    if exc.status >= 500:
        log.warning("%s %s -> %s: %s", request.method, request.url.path, exc.code, exc.message)
    return error_response(request, exc)


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    error: RbeeError
    if exc.status_code == 404:
        error = NotFound("no such route")
    elif exc.status_code == 405:
        error = MethodNotAllowed(f"{request.method} is not allowed on this route")
    elif 400 <= exc.status_code < 500:
        error = InvalidRequest(exc.detail)
    else:
        error = RbeeError(exc.detail)
    error.status = exc.status_code  # type: ignore[misc]
    return error_response(request, error)


class RedactQuery(logging.Filter):
    """The access log's path without its query string, which may carry a token."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            path, sep, _ = args[2].partition("?")
            if sep:
                record.args = (*args[:2], f"{path}?[redacted]", *args[3:])
        return True


async def unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(request, RbeeError("internal error; see the queen's log"))


# SQLite's words for a database that cannot take a write now but may later:
# a full disk, a read-only file system, another writer's lock past the busy
# timeout, an I/O error. Anything else from the database is a bug (500).
STORE_OUTAGE_WORDS = ("locked", "full", "readonly", "read-only", "disk i/o", "unable to open")


def server_outage(exc: Exception) -> bool:
    """PostgreSQL's outages: psycopg's OperationalError is a lost or refused
    connection, a lock past lock_timeout, a deadlock, a full disk or a server
    shutting down (SQLSTATE classes 08, 40, 53, 55, 57); InterfaceError a
    connection already closed. A constraint or a bad query is not one."""
    cause = getattr(exc, "orig", None)  # peewee keeps the driver's exception there
    from_psycopg = type(cause).__module__.startswith("psycopg")
    return isinstance(exc, (OperationalError, InterfaceError)) and from_psycopg


def store_outage(exc: Exception) -> StoreUnavailable | None:
    text = str(exc).lower()
    if not (server_outage(exc) or any(word in text for word in STORE_OUTAGE_WORDS)):
        return None
    return StoreUnavailable(f"the queen's database cannot take writes now ({text[:80]}); retry")


async def store_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """A database error: STORE_UNAVAILABLE with Retry-After when it is an outage."""
    outage = store_outage(exc)
    if outage is None:
        return await unexpected_error_handler(request, exc)
    log.warning("%s %s -> STORE_UNAVAILABLE: %s", request.method, request.url.path, exc)
    svc = getattr(request.app.state, "services", None)
    if svc is not None:
        svc.notices.store_outage(outage.message)
    response = error_response(request, outage)
    response.headers["Retry-After"] = str(outage.retry_after_s)
    return response
