"""Pure ASGI middleware: each answer's route, status, error code and duration
go to the metrics (`rbee_http_request_duration_seconds`, `rbee_errors_total`).

Outermost, so a request refused by the auth or the deadline check is counted
too. The route is the matched route's template (`/v2/workers/{worker_id}/events`),
never the raw path, so the label stays bounded (a request refused before
routing gets the route it asked for); an unmatched path is `unmatched`. The
duration runs to the answer's last byte, so a token stream counts whole. The
error code is read from the envelope of an error answer (its first body chunk:
the queen's error answers are one small JSON write).

Until its answer's body begins, a request also holds back the queen's
deferred bookkeeping (rbee_queen/deferred.py): an inference's path to its
worker and back to its first token is not to wait behind it. Not the head:
a stream's head leaves while the worker prefills, and bookkeeping run then
landed on the first token of a short prefill.
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rbee_queen import deferred

UNMATCHED = "unmatched"


class RequestTiming:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees when the app fails before answering
        code: str | None = None
        hold = deferred.Hold()

        async def timed_send(message: Message) -> None:
            nonlocal status, code
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                hold.release()
                if status >= 400 and code is None:
                    code = _error_code(message.get("body", b"")) or ""  # "": looked once
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            hold.release()
            metrics = _metrics(scope)
            if metrics is not None:  # counted a moment later (rbee_queen/deferred.py)
                took = time.perf_counter() - started
                method, error = scope["method"], code or None
                deferred.later(
                    lambda: metrics.observe_http(_route_of(scope), method, status, error, took)
                )


def _route_of(scope: Scope) -> str:
    """The template of the route that answered; for a request refused before
    routing (auth, deadline), the one that would have."""
    matched = scope.get("route")
    if matched is None:
        routes = getattr(scope.get("app"), "routes", [])
        matched = next((r for r in routes if r.matches(scope)[0] != Match.NONE), None)
    return str(getattr(matched, "path", None) or UNMATCHED)


def _metrics(scope: Scope) -> Any:
    services = getattr(getattr(scope.get("app"), "state", None), "services", None)
    return getattr(services, "metrics", None)


def _error_code(body: bytes) -> str | None:
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return code if isinstance(code, str) else None
