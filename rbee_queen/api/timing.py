"""Each answer's route, status, error code and duration, for the metrics
(`rbee_http_request_duration_seconds`, `rbee_errors_total`); the queen's front
(front.py) times every request with one `Timed`, from its first step, so a
request refused by the auth or the deadline check is counted too.

The route is the matched route's template (`/v2/workers/{worker_id}/events`),
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
from starlette.types import Message, Scope

from rbee_queen import deferred

UNMATCHED = "unmatched"


class Timed:
    """One request's answer as the metrics see it."""

    __slots__ = ("code", "counted", "hold", "started", "status")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.status = 500  # what the client sees when the app fails before answering
        self.code: str | None = None
        self.hold = deferred.Hold()
        self.counted = False

    def saw(self, message: Message) -> None:
        """A message of the answer, on its way out."""
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
        elif message["type"] == "http.response.body":
            self.hold.release()
            if self.status >= 400 and self.code is None:
                self.code = _error_code(message.get("body", b"")) or ""  # "": looked once

    def done(self, scope: Scope) -> None:
        """The answer is over, at its last byte's write (a stream's teardown
        comes a moment after it), or failed: counted a moment later
        (deferred.py), once."""
        self.hold.release()
        if self.counted:
            return
        self.counted = True
        metrics = _metrics(scope)
        if metrics is None:
            return
        took = time.perf_counter() - self.started
        method, status, error = scope["method"], self.status, self.code or None

        def observe() -> None:
            metrics.observe_http(_route_of(scope), method, status, error, took)

        deferred.later(observe)


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
