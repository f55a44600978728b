"""The fleet's sessions: one per node, opened on demand, reused, replaced when lost.

A node whose connect failed is not hammered: further attempts wait out an
exponential backoff (base doubling up to a cap), during which `get` fails at
once with the last error. An explicit action by a person (`retry_now=True`, as
`add-node` does) skips the wait. Two semaphores bound the work in flight: one
per node (so a burst of requests never opens dozens of channels to one box)
and one for the whole fleet. A third bounds the connects in progress, so a
queen starting against hundreds of nodes does not spend all its CPU (and the
nodes' sshds theirs) on key exchanges at once; a live session never waits on
it, and a node slow to answer holds only one of its slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from rbee_queen.errors import ConnectionTimeout, RbeeError
from rbee_queen.fleet.known_hosts import HostKeyStore
from rbee_queen.fleet.session import NodeSession, NodeTarget, open_session
from rbee_wire.queen_events import QueenEvent, SshConnect


@dataclass(frozen=True)
class PoolLimits:
    per_node: int = 4
    fleet: int = 64
    # Measured (bench/scale.py, docs/benchmarks.md): on two cores, more connects
    # at once made a cold connect of 64 nodes under 10 % faster, and of 128 slower.
    connects: int = 16
    backoff_base_s: float = 0.5
    backoff_max_s: float = 10.0


@dataclass
class _Failure:
    target: NodeTarget
    count: int
    retry_at: float
    error: RbeeError


class SessionPool:
    def __init__(
        self,
        host_keys: HostKeyStore,
        connect_timeout: float,
        limits: PoolLimits | None = None,
    ) -> None:
        self.host_keys = host_keys
        self.connect_timeout = connect_timeout
        self.limits = limits or PoolLimits()
        self._sessions: dict[str, NodeSession] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._failures: dict[str, _Failure] = {}
        self._node_slots: dict[str, asyncio.Semaphore] = {}
        self._fleet_slots = asyncio.Semaphore(self.limits.fleet)
        self._connect_slots = asyncio.Semaphore(self.limits.connects)
        self._closing: set[asyncio.Task[None]] = set()
        # Each connect's outcome goes to the event bus (wired by the services).
        self.publish: Callable[[QueenEvent], object] = lambda event: None

    @contextlib.asynccontextmanager
    async def slot(self, name: str) -> AsyncIterator[None]:
        """Hold one of the fleet's and one of this node's concurrency slots."""
        node_slots = self._node_slots.setdefault(name, asyncio.Semaphore(self.limits.per_node))
        async with self._fleet_slots, node_slots:
            yield

    async def get(
        self,
        target: NodeTarget,
        *,
        accept_new_host_key: bool = False,
        retry_now: bool = False,
    ) -> NodeSession:
        session = self._sessions.get(target.name)
        if session is not None and session.alive and session.target == target:
            return session  # the common case, answered without taking the node's lock
        lock = self._locks.setdefault(target.name, asyncio.Lock())
        async with lock:  # one connect per node even when many requests arrive at once
            session = self._sessions.get(target.name)
            if session is not None and session.alive and session.target == target:
                return session
            if session is not None:
                self._sessions.pop(target.name, None)
                self._close_later(session)
            if not retry_now:
                self._raise_if_backing_off(target)
            async with self._connect_slots:
                session = await self._connect(target, accept_new_host_key)
            self._failures.pop(target.name, None)
            self._sessions[target.name] = session
            return session

    async def _connect(self, target: NodeTarget, accept_new_host_key: bool) -> NodeSession:
        """One connect, in a connect slot; its outcome recorded and published."""
        started = time.monotonic()
        try:
            session = await open_session(
                target,
                self.host_keys,
                connect_timeout=self.connect_timeout,
                accept_new_host_key=accept_new_host_key,
            )
        except RbeeError as error:
            self._record_failure(target, error)
            self._publish_connect(target.name, started, error.code)
            raise
        except asyncio.CancelledError:
            # Given up by its caller (a round's timeout): a failed attempt too, so
            # a node that never answers waits out its backoff instead of taking a
            # connect slot from the others every round.
            gave_up = ConnectionTimeout(f"{target.name} did not finish connecting")
            self._record_failure(target, gave_up)
            self._publish_connect(target.name, started, gave_up.code)
            raise
        self._publish_connect(target.name, started, None)
        return session

    def _publish_connect(self, node: str, started: float, error: str | None) -> None:
        took = time.monotonic() - started
        self.publish(SshConnect(type="ssh_connect", node=node, error=error, duration_s=took))

    def _raise_if_backing_off(self, target: NodeTarget) -> None:
        failure = self._failures.get(target.name)
        if failure is None or failure.target != target:
            return
        wait = failure.retry_at - time.monotonic()
        if wait > 0:
            error = failure.error
            raise type(error)(f"{error.message} (next retry in {wait:.1f}s)", **error.details)

    def _record_failure(self, target: NodeTarget, error: RbeeError) -> None:
        previous = self._failures.get(target.name)
        count = previous.count + 1 if previous and previous.target == target else 1
        delay = min(self.limits.backoff_base_s * 2 ** (count - 1), self.limits.backoff_max_s)
        self._failures[target.name] = _Failure(target, count, time.monotonic() + delay, error)

    def backoff_remaining(self, name: str) -> float:
        failure = self._failures.get(name)
        return max(0.0, failure.retry_at - time.monotonic()) if failure else 0.0

    def peek(self, name: str) -> NodeSession | None:
        return self._sessions.get(name)

    def discard(self, name: str) -> None:
        """Forget a session that stopped answering; it is closed in the background,
        because closing a connection whose link is down can take seconds."""
        session = self._sessions.pop(name, None)
        if session is not None:
            self._close_later(session)

    def _close_later(self, session: NodeSession) -> None:
        task = asyncio.create_task(session.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def drop(self, name: str) -> None:
        self._failures.pop(name, None)
        session = self._sessions.pop(name, None)
        if session is not None:
            await session.close()

    async def close_all(self) -> None:
        sessions = list(self._sessions.values())
        self._sessions.clear()
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
        await asyncio.gather(*self._closing, return_exceptions=True)
