"""The fleet's sessions: one per node, opened on demand, reused, replaced when lost."""

from __future__ import annotations

import asyncio

from rbee_queen.fleet.known_hosts import HostKeyStore
from rbee_queen.fleet.session import NodeSession, NodeTarget, open_session


class SessionPool:
    def __init__(self, host_keys: HostKeyStore, connect_timeout: float) -> None:
        self.host_keys = host_keys
        self.connect_timeout = connect_timeout
        self._sessions: dict[str, NodeSession] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, target: NodeTarget, *, accept_new_host_key: bool = False) -> NodeSession:
        lock = self._locks.setdefault(target.name, asyncio.Lock())
        async with lock:  # one connect per node even when many requests arrive at once
            session = self._sessions.get(target.name)
            if session is not None and session.alive and session.target == target:
                return session
            if session is not None:
                self._sessions.pop(target.name, None)
                await session.close()
            session = await open_session(
                target,
                self.host_keys,
                connect_timeout=self.connect_timeout,
                accept_new_host_key=accept_new_host_key,
            )
            self._sessions[target.name] = session
            return session

    def peek(self, name: str) -> NodeSession | None:
        return self._sessions.get(name)

    async def drop(self, name: str) -> None:
        session = self._sessions.pop(name, None)
        if session is not None:
            await session.close()

    async def close_all(self) -> None:
        sessions = list(self._sessions.values())
        self._sessions.clear()
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
