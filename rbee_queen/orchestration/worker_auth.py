"""Each worker's bearer token, held by the queen and sent on every call to it.

The queen makes a token per worker, gives it to the worker through the spawn
environment (never argv, which `ps` shows every user of the node), and keeps
it in memory only: it never leaves the queen and the worker's node. The
tokens are keyed by the local end of the worker's SSH forward, so every call
through the shared httpx client carries the right one without each call site
having to remember it.
"""

from __future__ import annotations

import secrets
from collections.abc import Generator

import httpx

TOKEN_ENV = "RBEE_WORKER_TOKEN"


class WorkerTokens(httpx.Auth):
    def __init__(self) -> None:
        self._by_port: dict[int, str] = {}

    @staticmethod
    def new() -> str:
        return secrets.token_urlsafe(32)

    def bind(self, local_port: int, token: str) -> None:
        self._by_port[local_port] = token

    def forget(self, local_port: int) -> None:
        self._by_port.pop(local_port, None)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._by_port.get(request.url.port or 0)
        if token is not None and request.url.host == "127.0.0.1":
            request.headers["Authorization"] = f"Bearer {token}"
        yield request
