"""Node leases: which queen drives each node when two share one database.

Each node has one row in `node_leases`: a holder (a queen's id) and an expiry.
The holder renews all its leases in one UPDATE every `renew_s`; a queen takes
a node whose lease has lapsed (or that has none) with one conditional UPDATE
or INSERT, so two queens never both win it: the database decides, with no read
between the check and the write. Only the holder runs the node's health
checks, supervises and starts or stops its workers; a queen that takes a node
over first re-adopts the workers it finds there, as a restarted queen does.

A queen stops counting a lease as its own `renew_s` before it lapses in the
database (its clock measures from before the renewal was written), so two
queens whose clocks agree within that margin never both drive one node.
With one queen (the default) it holds every node; a restarted queen with the
same id (same host, same RBEE_HOME) takes its own leases back at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from peewee import DatabaseError, Value

from rbee_queen.errors import NodeError, NodeHeldElsewhere
from rbee_queen.store.tables import Node, NodeLease

log = logging.getLogger("rbee.queen.lease")

# Called with nodes just taken: re-adopts their workers; they count as driven
# once it returns. Called with nodes lost: forgets their workers here.
Gained = Callable[[set[str]], Awaitable[object]]
Lost = Callable[[set[str]], object]


def default_queen_id(home: Path) -> str:
    """The host's name and a hash of RBEE_HOME: stable across restarts (one
    queen runs per home), different for two queens on one host."""
    digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:8]
    return f"{socket.gethostname()}/{digest}"


def node_of(row: NodeLease) -> str:
    return str(row.node_id)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class LeaseSettings:
    queen_id: str
    ttl_s: float = 10.0
    renew_s: float = 3.0


class NodeLeases:
    def __init__(
        self,
        settings: LeaseSettings,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.clock = clock  # wall clock: the expiry is compared across queens
        self.monotonic = monotonic  # this queen's own count of a lease's life
        self.on_gained: Gained | None = None
        self.on_lost: Lost | None = None
        self._valid: dict[str, float] = {}  # node -> monotonic time it stops counting
        self._driven: set[str] = set()  # held and taken over (workers adopted)
        self._pending: dict[str, asyncio.Task[None]] = {}  # takeovers in progress
        self._task: asyncio.Task[None] | None = None

    @property
    def queen_id(self) -> str:
        return self.settings.queen_id

    # --- what the other parts ask ---------------------------------------------

    def holds(self, node: str) -> bool:
        """The lease is this queen's (its workers may still be being adopted)."""
        return self._valid.get(node, 0.0) > self.monotonic()

    def drives(self, node: str) -> bool:
        """Held and taken over: this queen starts, stops and supervises its workers."""
        return node in self._driven and self.holds(node)

    def driven(self) -> set[str]:
        return {n for n in self._driven if self.holds(n)}

    def held(self) -> set[str]:
        """The nodes whose lease is this queen's now (taken over or being taken)."""
        return {n for n in self._valid if self.holds(n)}

    def held_elsewhere(self, nodes: list[str]) -> set[str]:
        """Those of `nodes` whose lease another queen holds and has not let lapse."""
        rows = NodeLease.select().where(
            NodeLease.node.in_(nodes)
            & (NodeLease.holder != self.queen_id)
            & (NodeLease.expires_at >= self._now_ms())
        )
        return {node_of(row) for row in rows}

    async def ensure(self, node: str) -> None:
        """Drive `node` from here: taken now if its lease is free or lapsed
        (its workers re-adopted first); NODE_HELD_ELSEWHERE when another
        queen holds it. No await between the check and the takeover's start,
        so one takeover runs per node."""
        if self.drives(node):
            return
        pending = self._pending.get(node)
        if pending is None:
            started = self.monotonic()
            claim = self.claim(node)
            if claim is None:
                raise self._held_elsewhere(node)
            self._valid[node] = started + self._counted_s()
            if claim == "kept" and node in self._driven:
                return  # ours all along (a late renewal): its workers are still ours
            pending = self._start_takeover({node})
        await asyncio.shield(pending)
        if not self.drives(node):  # lost meanwhile, or its workers could not be adopted
            raise self._held_elsewhere(node)

    # --- the database ---------------------------------------------------------

    def acquire(self, node: str) -> bool:
        return self.claim(node) is not None

    def claim(self, node: str) -> str | None:
        """Renew one node's lease if it is ours ("kept"), else take it if it
        lapsed or is missing ("taken"); None when another queen holds it. One
        conditional write each, so of two queens racing exactly one wins."""
        now, expires = self._now_ms(), self._expiry_ms()
        me = self.queen_id
        mine = NodeLease.node == node
        if NodeLease.update(expires_at=expires).where(mine & (NodeLease.holder == me)).execute():
            return "kept"
        lapsed = mine & (NodeLease.expires_at < now)
        if NodeLease.update(holder=me, expires_at=expires).where(lapsed).execute():
            return "taken"
        new = {"node": node, "holder": me, "expires_at": expires}
        NodeLease.insert(new).on_conflict_ignore().execute()
        row = NodeLease.get_or_none(mine)
        return "taken" if row is not None and row.holder == me else None

    def renew_round(self) -> set[str]:
        """Renew ours, take every lapsed or missing lease; the nodes now held."""
        started = self.monotonic()
        now, expires = self._now_ms(), self._expiry_ms()
        me = self.queen_id
        NodeLease.update(expires_at=expires).where(NodeLease.holder == me).execute()
        NodeLease.update(holder=me, expires_at=expires).where(NodeLease.expires_at < now).execute()
        unleased = Node.select(Node.name, Value(me), Value(expires)).where(
            Node.name.not_in(NodeLease.select(NodeLease.node))
        )
        NodeLease.insert_from(
            unleased, [NodeLease.node, NodeLease.holder, NodeLease.expires_at]
        ).on_conflict_ignore().execute()
        held = {
            node_of(row)
            for row in NodeLease.select(NodeLease.node).where(
                (NodeLease.holder == me) & (NodeLease.expires_at >= expires)
            )
        }
        until = started + self._counted_s()
        self._valid = {node: until for node in held}
        return held

    def release(self) -> int:
        """Give up every lease at a clean stop, so another queen need not wait."""
        self._valid.clear()
        self._driven.clear()
        return int(NodeLease.delete().where(NodeLease.holder == self.queen_id).execute())

    # --- the loop --------------------------------------------------------------

    async def start(self) -> None:
        """The first round now, so the nodes held are known before anything else
        runs; then one every `renew_s`. `first_takeover` waits for the workers
        of the nodes taken in the first round to be re-adopted."""
        self._tick()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="node-leases")

    async def first_takeover(self) -> None:
        await asyncio.gather(*set(self._pending.values()), return_exceptions=True)

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._pending.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.renew_s)
            try:
                self._tick()
            except DatabaseError as exc:  # an outage (locked, full, server gone): said in one line
                log.warning("renewing the node leases failed: %s", exc)
                self._forget({n for n in self._driven if not self.holds(n)})
            except Exception:  # a bug: the leases lapse, the loop goes on
                log.exception("renewing the node leases failed")
                self._forget({n for n in self._driven if not self.holds(n)})

    def _tick(self) -> None:
        held = self.renew_round()
        self._forget(self._driven - held)
        gained = held - self._driven - set(self._pending)
        if gained:
            self._start_takeover(gained)

    def _start_takeover(self, nodes: set[str]) -> asyncio.Task[None]:
        task = asyncio.create_task(self._take_over(nodes), name="node-takeover")
        for node in nodes:
            self._pending[node] = task

        def done(_: asyncio.Task[None]) -> None:
            for node in nodes:
                if self._pending.get(node) is task:
                    del self._pending[node]

        task.add_done_callback(done)
        return task

    async def _take_over(self, nodes: set[str]) -> None:
        log.info("queen %s takes over node(s) %s", self.queen_id, ", ".join(sorted(nodes)))
        try:
            if self.on_gained is not None:
                await self.on_gained(nodes)
        except Exception:  # the next round tries these nodes again
            log.exception("taking over node(s) %s failed", ", ".join(sorted(nodes)))
            return
        self._driven |= {n for n in nodes if self.holds(n)}

    def _forget(self, lost: set[str]) -> None:
        if not lost:
            return
        self._driven -= lost
        log.warning("queen %s no longer holds node(s) %s", self.queen_id, ", ".join(sorted(lost)))
        if self.on_lost is not None:
            self.on_lost(lost)

    def _held_elsewhere(self, node: str) -> NodeError:
        row = NodeLease.get_or_none(NodeLease.node == node)
        if row is not None and row.holder == self.queen_id:
            return NodeError(f"taking node {node} over failed (see the queen's log); retry")
        holder = row.holder if row is not None else "another queen"
        left_s = max(0.0, (row.expires_at - self._now_ms()) / 1000) if row is not None else 0.0
        return NodeHeldElsewhere(
            f"node {node} is driven by queen {holder}; send the request there, "
            f"or retry here once its lease lapses (in {left_s:.0f} s if it is not renewed)",
            node=node,
            holder=holder,
            retry_after_s=round(left_s + self.settings.renew_s, 1),
        )

    def _counted_s(self) -> float:
        return self.settings.ttl_s - self.settings.renew_s

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _expiry_ms(self) -> int:
        return int((self.clock() + self.settings.ttl_s) * 1000)
