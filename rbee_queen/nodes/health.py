"""The node health loop: every interval, a ping to every node over its session.

Each node's status (`reachable`/`unreachable`), last connected time and last
error are written to its row as soon as that node answers or fails; the
round-trip latency is kept in memory (it changes every round and is worth
nothing after a restart). Rounds start at a fixed rate, so a host cut off is
marked unreachable within two intervals: the round after the cut starts at
most one interval later and gives up after `timeout` (less than an interval).
A node still being checked is not checked again until it is done, so a node
stuck in a long connect never piles up attempts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rbee_queen.fleet.fanout import GroupResult, NodeOutcome, fan_out
from rbee_queen.fleet.pool import SessionPool
from rbee_queen.fleet.session import NodeSession
from rbee_queen.nodes.inventory import target_of
from rbee_queen.store.tables import Node, utcnow
from rbee_wire.queen_events import HealthRound, NodeDisk, QueenEvent

log = logging.getLogger("rbee.queen.health")


@dataclass
class NodeHealth:
    latency_ms: float | None = None
    checked_at: datetime | None = None


async def ping_latency(session: NodeSession) -> float:
    """Round trip of one `ping` over the helper channel, in milliseconds."""
    started = time.perf_counter()
    await session.ops.ping(timeout=30.0)
    return round((time.perf_counter() - started) * 1000, 3)


async def probe_reading(session: NodeSession) -> tuple[float, list[dict[str, Any]], NodeDisk]:
    """Latency of a `probe`, and the GPU and disk readings it brings back."""
    started = time.perf_counter()
    probe = await session.ops.probe(install_path=session.install_dir, timeout=30.0)
    latency = round((time.perf_counter() - started) * 1000, 3)
    disk = NodeDisk(
        type="node_disk",
        node=session.target.name,
        free_bytes=int(probe["disk_free_bytes"]),
        total_bytes=int(probe["disk_total_bytes"]),
    )
    return latency, [dict(card) for card in probe["gpus"]], disk


# Called with (node, status, latency_ms, last_error, gpus or None) after each check.
NodeListener = Callable[[str, str, float | None, str | None, list[dict[str, Any]] | None], object]


class HealthMonitor:
    def __init__(
        self,
        pool: SessionPool,
        interval_s: float,
        *,
        gpu_interval_s: float = 15.0,
        listener: NodeListener | None = None,
    ) -> None:
        self.pool = pool
        self.interval_s = interval_s
        # GPUs are read with a probe every few rounds; the other rounds only ping.
        self.gpu_interval_s = gpu_interval_s
        self.gpu_every = max(1, round(gpu_interval_s / interval_s)) if interval_s > 0 else 1
        self.listener = listener
        self._changed = asyncio.Event()
        # Each round's duration goes to the event bus (wired by the services).
        self.publish: Callable[[QueenEvent], object] = lambda event: None
        # Whether this queen drives the node (its lease; see lease.py): only the
        # holder checks it, the other queen reads the status it writes.
        self.owns: Callable[[str], bool] = lambda node: True
        self._gpus: dict[str, list[dict[str, Any]]] = {}
        self.timeout_s = max(0.2, interval_s * 0.8)
        self.board: dict[str, NodeHealth] = {}
        self.rounds = 0  # rounds started, so tests can count intervals without clocks
        self._in_flight: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._rounds: set[asyncio.Task[GroupResult[float]]] = set()

    def start(self) -> None:
        if self.interval_s > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name="node-health")

    def reconfigure(self, interval_s: float, gpu_interval_s: float) -> None:
        """New intervals from a reload: the next round starts one new interval
        after this (a round in progress runs on); 0 ends the loop."""
        self.interval_s, self.gpu_interval_s = interval_s, gpu_interval_s
        self.gpu_every = max(1, round(gpu_interval_s / interval_s)) if interval_s > 0 else 1
        self.timeout_s = max(0.2, interval_s * 0.8)
        self._changed.set()
        self.start()

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._rounds) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None

    def health(self, name: str) -> NodeHealth:
        return self.board.get(name) or NodeHealth()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while self.interval_s > 0:
            self.rounds += 1
            task = asyncio.create_task(self.check_round())
            self._rounds.add(task)
            task.add_done_callback(self._rounds.discard)
            next_at = max(next_at + self.interval_s, loop.time())
            while not await self._waited(next_at - loop.time()) and self.interval_s > 0:
                next_at = loop.time() + self.interval_s  # reconfigured: a new interval from now
        self._task = None

    async def _waited(self, delay_s: float) -> bool:
        """Sleep until the next round; False when the intervals changed meanwhile."""
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), max(0.0, delay_s))
        except TimeoutError:
            return True
        return False

    async def check_round(self) -> GroupResult[float]:
        nodes = [n for n in Node.select() if n.name not in self._in_flight and self.owns(n.name)]
        self._in_flight.update(n.name for n in nodes)
        read_gpus = (self.rounds - 1) % self.gpu_every == 0

        async def check(session: NodeSession) -> float:
            if not read_gpus:
                return await ping_latency(session)
            latency, gpus, disk = await probe_reading(session)
            self._gpus[session.target.name] = gpus
            self.publish(disk)
            return latency

        started = time.monotonic()
        try:
            result = await fan_out(
                self.pool,
                [target_of(n) for n in nodes],
                check,
                timeout=self.timeout_s,
                on_done=self.record,
            )
        finally:
            self._in_flight.difference_update(n.name for n in nodes)
        if nodes:
            took = time.monotonic() - started
            failed = len(result.failed)
            self.publish(
                HealthRound(type="health_round", nodes=len(nodes), failed=failed, duration_s=took)
            )
        return result

    def record(self, outcome: NodeOutcome[float]) -> None:
        """Write one node's outcome: status and errors to its row, latency to the board."""
        now = utcnow()
        self.board[outcome.node] = NodeHealth(outcome.value, now)
        if self.listener is not None:
            self.listener(
                outcome.node,
                "reachable" if outcome.error is None else "unreachable",
                outcome.value,
                outcome.error.message if outcome.error is not None else None,
                self._gpus.pop(outcome.node, None),
            )
        if outcome.error is None:
            changes = {"status": "reachable", "last_error": None, "last_connected": now}
        else:
            changes = {"status": "unreachable", "last_error": outcome.error.message}
        previous = Node.get_or_none(Node.name == outcome.node)
        Node.update(**changes).where(Node.name == outcome.node).execute()  # type: ignore[arg-type]
        if previous is not None and previous.status != changes["status"]:
            log.info("node %s is %s: %s", outcome.node, changes["status"], outcome.error or "ok")
