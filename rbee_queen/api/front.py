"""The queen's one middleware: what every request goes through before its
route (timing, correlation id and deadline, bearer auth; timing.py,
context.py, auth.py), in one layer, and the inference routes served from here
straight to their endpoint.

Why one layer, and why past the router: the queen's request path is
memory-bound (an inference's first token waits on it, and a request finds
the queen's caches cold after a pause; `bench.asgi_stack --cold`). Each ASGI
layer is a coroutine, a closure and a send wrapper more to bring in from
memory, on the request and on every token's write: as three middlewares
behind Starlette's router and exception middleware, a token went through five
send wrappers; it now goes through two (this one and Starlette's last-resort
500 handler, kept outermost). The inference routes stay in the router too,
which answers everything else (a GET on them: 405), and their exceptions are
rendered by the app's own handlers, as the router would.

The order is the one the three middlewares had: timed from the first step; a
malformed deadline header refused (400) before the auth, an expired control
deadline (408) too; then the auth (401, 403); then the route, within the
control deadline for a control call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rbee_queen import requestcontext as ctx
from rbee_queen.api import auth, context
from rbee_queen.api.timing import Timed
from rbee_queen.errors import RbeeError, RequestTimeout

Handler = Callable[[Request, Exception], Awaitable[Response]]


class Answer:
    """A request's answer on its way out: timed, its head given the
    correlation id, and the control deadline's timer stopped once it begins
    (the deadline is for an answer to start: a log or a stream may run on)."""

    __slots__ = ("cid", "downstream", "scope", "started", "timed", "timer")

    def __init__(self, send: Send, cid: str, scope: Scope) -> None:
        self.downstream = send
        self.cid = cid
        self.scope = scope
        self.started = False
        self.timed = Timed()
        self.timer: asyncio.Timeout | None = None

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            message["headers"] = context.with_correlation(message.get("headers", []), self.cid)
            if self.timer is not None:
                self.timer.reschedule(None)
        self.timed.saw(message)
        await self.downstream(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.timed.done(self.scope)  # its last byte is out: what follows is teardown


class Front:
    """`direct`: routes without path parameters served here, past the router;
    `handlers`: the app's exception handlers (`Exception`'s aside: Starlette's
    outermost middleware renders those)."""

    def __init__(
        self,
        app: ASGIApp,
        control_timeout_s: float = 30.0,
        direct: Iterable[Route] = (),
        handlers: Mapping[Any, Handler] | None = None,
    ) -> None:
        self.app = app
        self.control_timeout_s = control_timeout_s
        self.direct = {(m, r.path): r for r in direct for m in r.methods or ()}
        if any("{" in path for _, path in self.direct):
            raise ValueError("a route served by the front takes no path parameters")
        self.handlers = {k: v for k, v in (handlers or {}).items() if k not in (500, Exception)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cid, sent_deadline = context.request_ids(scope)
        answer = Answer(send, cid, scope)
        cid_token = ctx.correlation_id.set(cid)
        try:
            try:
                at = context.deadline(scope["path"], sent_deadline, self.control_timeout_s)
            except RbeeError as exc:
                await context.send_error(exc, cid, scope, receive, answer.send)
                return
            deadline_token = ctx.deadline.set(at)
            try:
                await self._admitted(at, scope, receive, answer)
            finally:
                ctx.deadline.reset(deadline_token)
        finally:
            ctx.correlation_id.reset(cid_token)
            answer.timed.done(scope)

    async def _admitted(
        self, at: float | None, scope: Scope, receive: Receive, answer: Answer
    ) -> None:
        # Inference routes enforce their deadline themselves (before the first
        # byte here, after it on the worker), in their own error shape.
        control = at is not None and scope["path"] not in context.STREAMING_PATHS
        if control and at is not None and at <= time.time():
            # A handler that never suspends would not notice.
            error = RequestTimeout("the request deadline had passed when it arrived")
            await context.send_error(error, answer.cid, scope, receive, answer.send)
            return
        try:
            auth.admit(scope)
        except RbeeError as exc:
            await auth.refusal(scope, exc)(scope, receive, answer.send)
            return
        if not control or at is None:
            await self._route(scope, receive, answer)
            return
        answer.timer = asyncio.timeout_at(ctx.loop_time_at(at))
        try:
            async with answer.timer:
                await self._route(scope, receive, answer)
        except TimeoutError:
            answer.timer = None
            if not answer.started:
                error = RequestTimeout("the request deadline passed before an answer was ready")
                await context.send_error(error, answer.cid, scope, receive, answer.send)
        finally:
            answer.timer = None

    async def _route(self, scope: Scope, receive: Receive, answer: Answer) -> None:
        route = self.direct.get((scope["method"], scope["path"]))
        if route is None:
            await self.app(scope, receive, answer.send)
            return
        # What the router and Starlette's request_response would do, in place.
        scope["route"] = route  # for the metrics' route label (timing.py)
        scope["endpoint"], scope["path_params"] = route.endpoint, {}
        request = Request(scope, receive)
        try:
            response = await route.endpoint(request)
            await response(scope, receive, answer.send)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise  # to Starlette's outermost middleware: a 500
            if answer.started:
                raise RuntimeError("caught a handled exception after the answer began") from exc
            await (await handler(request, exc))(scope, receive, answer.send)
            exc.__traceback__ = None  # a reused exception would pile up tracebacks

    def _handler_for(self, exc: Exception) -> Handler | None:
        for cls in type(exc).__mro__:
            if cls in self.handlers:
                return self.handlers[cls]
        return None
