"""How the queen reaches its workers: each worker's bearer token (in memory,
and in the database for a restarted queen or one taking the node over), and
the HTTP client for control calls (health, ready) that sends it."""

from __future__ import annotations

from pathlib import Path

import httpx

from rbee_queen.fleet.session import NodeSession
from rbee_queen.fleet.worker_auth import WorkerTokens
from rbee_queen.workers.live import KEEPALIVE_SOCKET_OPTIONS
from rbee_queen.workers.token_file import TokenFile


class WorkerAccess:
    def __init__(self, token_path: Path) -> None:
        self.tokens = WorkerTokens()
        self.token_file = TokenFile(token_path)
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(10.0, read=None),
            auth=self.tokens,
            transport=httpx.AsyncHTTPTransport(socket_options=KEEPALIVE_SOCKET_OPTIONS),
        )

    async def forward(self, session: NodeSession, remote_port: int, token: str) -> int:
        """Forward a local port to the worker's port on its node; calls to it
        carry the worker's token. Returns the local port."""
        local_port = await session.forward(remote_port)
        self.tokens.bind(local_port, token)
        return local_port

    async def get(self, url: str, timeout: float) -> httpx.Response | None:
        """A control call; None when the worker did not answer."""
        try:
            return await self.http.get(url, timeout=timeout)
        except httpx.HTTPError:
            return None

    async def aclose(self) -> None:
        await self.http.aclose()
