"""Pure ASGI middleware: a correlation id and a deadline for every request.

The id comes from `X-Correlation-Id` (or is made here), is echoed in the answer's
header and is set as a context variable, so the queen's log lines and the worker
see it. `X-Request-Deadline` (Unix time in ms) is honoured everywhere; control
calls without one get the default control deadline, which bounds the time until
the answer starts (a log that follows may then run on). Inference routes stream
for as long as generation takes, so they get no default: they pass their
deadline on and the worker cuts the stream when it passes.
"""

from __future__ import annotations

import asyncio
import time

from starlette.datastructures import MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rbee_queen import requestcontext as ctx
from rbee_queen.api.openai_format import error_body
from rbee_queen.errors import InvalidRequest, RbeeError, RequestTimeout

_CORRELATION = ctx.CORRELATION_HEADER.encode()
_DEADLINE = ctx.DEADLINE_HEADER.encode()
STREAMING_PATHS = frozenset({"/v2/tasks", "/v1/completions", "/v1/chat/completions"})


class RequestContext:
    def __init__(self, app: ASGIApp, control_timeout_s: float = 30.0) -> None:
        self.app = app
        self.control_timeout_s = control_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent_id, sent_deadline = _our_headers(scope["headers"])
        cid = ctx.new_correlation_id(sent_id)
        scope.setdefault("state", {})["correlation_id"] = cid
        cid_token = ctx.correlation_id.set(cid)
        try:
            at = self._deadline(scope["path"], sent_deadline)
        except RbeeError as exc:
            await _send_error(exc, cid, scope, receive, send)
            ctx.correlation_id.reset(cid_token)
            return
        deadline_token = ctx.deadline.set(at)
        try:
            await self._call(at, cid, scope, receive, send)
        finally:
            ctx.deadline.reset(deadline_token)
            ctx.correlation_id.reset(cid_token)

    async def _call(
        self, at: float | None, cid: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        started = False
        timer: asyncio.Timeout | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message).setdefault(ctx.CORRELATION_HEADER, cid)
                if timer is not None:
                    # The deadline is for an answer to start: a log that follows or
                    # an event stream may then run on.
                    timer.reschedule(None)
            await send(message)

        if at is None or scope["path"] in STREAMING_PATHS:
            # Inference routes enforce their deadline themselves (before the first
            # byte here, after it on the worker), in their own error shape.
            await self.app(scope, receive, send_with_id)
            return
        if at <= time.time():  # a handler that never suspends would not notice
            error = RequestTimeout("the request deadline had passed when it arrived")
            await _send_error(error, cid, scope, receive, send)
            return
        try:
            async with asyncio.timeout_at(ctx.loop_time_at(at)) as timer:
                await self.app(scope, receive, send_with_id)
        except TimeoutError:
            if not started:
                error = RequestTimeout("the request deadline passed before an answer was ready")
                await _send_error(error, cid, scope, receive, send)

    def _deadline(self, path: str, header: str | None) -> float | None:
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
        return ctx.earliest(sent, time.time() + self.control_timeout_s)


def _our_headers(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """The correlation id and the deadline a request sent (the first of each),
    in one pass over its raw headers: on every request's path, where Starlette's
    `Headers` cost more than the rest of this middleware."""
    sent_id = sent_deadline = None
    for name, value in headers:
        if name == _CORRELATION and sent_id is None:
            sent_id = value.decode("latin-1")
        elif name == _DEADLINE and sent_deadline is None:
            sent_deadline = value.decode("latin-1")
    return sent_id, sent_deadline


async def _send_error(exc: RbeeError, cid: str, scope: Scope, receive: Receive, send: Send) -> None:
    headers = {ctx.CORRELATION_HEADER: cid}
    # /v1 speaks OpenAI's error shape, even for a header refused before routing.
    body = error_body(exc, cid) if scope["path"].startswith("/v1/") else exc.envelope(cid)
    await JSONResponse(body, status_code=exc.status, headers=headers)(scope, receive, send)
