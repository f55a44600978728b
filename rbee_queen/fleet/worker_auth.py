"""Each worker's bearer token, held by the queen and sent on every call to it.

The queen makes a token per worker, gives it to the worker through the spawn
environment (never argv, which `ps` shows every user of the node), and keeps
it in memory only: it never leaves the queen and the worker's node. The
tokens are keyed by the address the queen calls the worker at (the local end
of its SSH forward, or the node's address and the worker's port where the node
is reached directly), so every call through the shared httpx client carries
the right one, and only to that address, without each call site having to
remember it.
"""

from __future__ import annotations

import secrets
from collections.abc import Generator

import httpx

TOKEN_ENV = "RBEE_WORKER_TOKEN"


class WorkerTokens(httpx.Auth):
    def __init__(self) -> None:
        self._by_address: dict[tuple[str, int], str] = {}

    @staticmethod
    def new() -> str:
        return secrets.token_urlsafe(32)

    def bind(self, port: int, token: str, host: str = "127.0.0.1") -> None:
        self._by_address[(host, port)] = token

    def forget(self, port: int, host: str = "127.0.0.1") -> None:
        self._by_address.pop((host, port), None)

    def token_at(self, host: str, port: int) -> str | None:
        return self._by_address.get((host, port))

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.token_at(request.url.host, request.url.port or 0)
        if token is not None:
            request.headers["Authorization"] = f"Bearer {token}"
        yield request
