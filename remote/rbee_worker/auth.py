"""The worker's bearer token: every route but /health needs it.

The queen makes one token per worker and sends it to the node's helper over
SSH; the helper writes it to a 0600 file in the run folder and names the file
in `RBEE_WORKER_TOKEN_FILE`. The worker reads it and deletes the file at once.
Never argv, where `ps` would show it to every user of the node, and never the
environment, which `/proc/<pid>/environ` shows for the process's whole life.
`RBEE_WORKER_TOKEN` itself is still read, for a worker started by hand.
Loopback alone is not enough: any local user of the node can reach 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re

from starlette.types import ASGIApp, Receive, Scope, Send

from rbee_worker.errors import error_response

TOKEN_ENV = "RBEE_WORKER_TOKEN"
TOKEN_FILE_ENV = "RBEE_WORKER_TOKEN_FILE"
PUBLIC_PATHS = frozenset({"/health"})
BEARER = re.compile(rb"Bearer ([A-Za-z0-9\-._~+/]+=*)")


def take_token() -> str | None:
    """The token from its file (then deleted) or the environment; both variables
    removed from the environment so children never see them."""
    token = os.environ.pop(TOKEN_ENV, None)
    path = os.environ.pop(TOKEN_FILE_ENV, None)
    if path:
        with open(path) as fh:
            token = fh.read().strip()
        os.remove(path)
    return token or None


class RequireToken:
    """Pure ASGI middleware, so the token stream is never buffered."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        # Compare digests: equal length always, so timing tells nothing either way.
        self._digest = hashlib.sha256(token.encode()).digest()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        values = [v for k, v in scope["headers"] if k == b"authorization"]
        code = self._check(values)
        if code is None:
            await self.app(scope, receive, send)
            return
        response = error_response(401, code, "this worker needs its bearer token")
        response.headers["www-authenticate"] = "Bearer"
        await response(scope, receive, send)

    def _check(self, values: list[bytes]) -> str | None:
        if not values:
            return "MISSING_API_KEY"
        match = BEARER.fullmatch(values[0]) if len(values) == 1 else None
        presented = hashlib.sha256(match.group(1) if match else b"").digest()
        if match is None or not hmac.compare_digest(presented, self._digest):
            return "INVALID_API_KEY"
        return None
