"""A correlation id and a deadline for every request (read by the queen's
front, front.py, before anything else).

The id comes from `X-Correlation-Id` (or is made here), is echoed in the answer's
header and is set as a context variable, so the queen's log lines and the worker
see it. `X-Request-Deadline` (Unix time in ms) is honoured everywhere; control
calls without one get the default control deadline, which bounds the time until
the answer starts (a log that follows may then run on). Inference routes stream
for as long as generation takes, so they get no default: they pass their
deadline on and the worker cuts the stream when it passes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from rbee_queen import requestcontext as ctx
from rbee_queen.api.openai_format import error_body
from rbee_queen.errors import InvalidRequest, RbeeError

CORRELATION = ctx.CORRELATION_HEADER.encode()
_DEADLINE = ctx.DEADLINE_HEADER.encode()
STREAMING_PATHS = frozenset({"/v2/tasks", "/v1/completions", "/v1/chat/completions"})


def request_ids(scope: Scope) -> tuple[str, str | None]:
    """The request's correlation id (kept in its scope's state too) and the
    deadline header it sent, if any."""
    sent_id, sent_deadline = _our_headers(scope["headers"])
    cid = ctx.new_correlation_id(sent_id)
    scope.setdefault("state", {})["correlation_id"] = cid
    return cid, sent_deadline


def deadline(path: str, header: str | None, control_timeout_s: float) -> float | None:
    """The request's deadline (Unix seconds): the one it sent, and for a
    control call no later than `control_timeout_s` from now. 400 when the
    header is not Unix time in milliseconds."""
    sent = None
    if header is not None:
        sent = ctx.parse_deadline(header)
        if sent is None:
            field = {"field": "X-Request-Deadline", "constraint": "type"}
            raise InvalidRequest(
                "X-Request-Deadline must be Unix time in milliseconds",
                fields=[{**field, "message": "Unix time in milliseconds"}],
            )
    if path in STREAMING_PATHS:
        return sent
    return ctx.earliest(sent, time.time() + control_timeout_s)


def with_correlation(headers: Iterable[tuple[bytes, bytes]], cid: str) -> list[tuple[bytes, bytes]]:
    """An answer's headers with the correlation id, unless they carry one (a
    new list: a response's headers may be a constant shared by all)."""
    listed = list(headers)
    if not any(name == CORRELATION for name, _ in listed):
        listed.append((CORRELATION, cid.encode("latin-1")))
    return listed


def _our_headers(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """The correlation id and the deadline a request sent (the first of each),
    in one pass over its raw headers: on every request's path, where Starlette's
    `Headers` cost more than the rest of this."""
    sent_id = sent_deadline = None
    for name, value in headers:
        if name == CORRELATION and sent_id is None:
            sent_id = value.decode("latin-1")
        elif name == _DEADLINE and sent_deadline is None:
            sent_deadline = value.decode("latin-1")
    return sent_id, sent_deadline


async def send_error(exc: RbeeError, cid: str, scope: Scope, receive: Receive, send: Send) -> None:
    headers = {ctx.CORRELATION_HEADER: cid}
    # /v1 speaks OpenAI's error shape, even for a header refused before routing.
    body = error_body(exc, cid) if scope["path"].startswith("/v1/") else exc.envelope(cid)
    await JSONResponse(body, status_code=exc.status, headers=headers)(scope, receive, send)
