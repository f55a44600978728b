"""Stopping workers: drain, then stop (`workers shutdown`, the idle stop,
removing a node, stopping the queen), and signalling a worker's process group
on its node, which every other way of ending a worker goes through too."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from rbee_queen.config import QueenConfig
from rbee_queen.errors import RbeeError, WorkerNotFound
from rbee_queen.fleet.session import NodeSession
from rbee_queen.nodes.inventory import NodeInventory
from rbee_queen.nodes.lease import NodeLeases
from rbee_queen.store.tables import Worker
from rbee_queen.validation import shown
from rbee_queen.workers.access import WorkerAccess
from rbee_queen.workers.registry import WorkerRegistry
from rbee_queen.workers.states import LIVE, StateRecorder, WorkerState
from rbee_wire.queen_events import WorkerShutdown

log = logging.getLogger("rbee.queen.workers")
S = WorkerState


class WorkerStopper:
    def __init__(
        self,
        config: QueenConfig,
        inventory: NodeInventory,
        registry: WorkerRegistry,
        access: WorkerAccess,
        states: StateRecorder,
        leases: NodeLeases | None = None,
    ) -> None:
        self.config = config
        self.leases = leases  # only the holder of a node's lease stops its workers
        self.inventory = inventory
        self.registry = registry
        self.access = access
        self.states = states
        self._shutdowns: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def shutdown(self, worker_id: str, reason: str = "shutdown requested") -> dict[str, Any]:
        """Drain, then stop. New requests skip the worker (503 WORKER_DRAINING when
        it was the only one that could serve them); the streams in flight get
        `worker_stop_grace_s` to finish; then SIGTERM, and SIGKILL of its group after
        the same grace. `forced`: a stream was still running or SIGKILL was needed.
        A second call for the same worker waits for the first one's answer."""
        pending = self._shutdowns.get(worker_id)
        if pending is None:
            row = Worker.get_or_none(Worker.worker_id == worker_id)
            if row is None or row.state not in LIVE:
                raise WorkerNotFound(f"no running worker {shown(worker_id)}")
            if self.leases is not None:
                await self.leases.ensure(str(row.node_id))  # type: ignore[attr-defined]
            pending = asyncio.ensure_future(self._timed_stop(row, reason))
            self._shutdowns[worker_id] = pending
            pending.add_done_callback(lambda _: self._shutdowns.pop(worker_id, None))
        return await asyncio.shield(pending)

    async def _timed_stop(self, row: Worker, reason: str) -> dict[str, Any]:
        """Drain and stop; publish how it ended (graceful, forced, an error's code)
        and how long it took."""
        started, outcome = time.monotonic(), RbeeError.code
        try:
            result = await self._drain_and_stop(row, reason)
            outcome = "forced" if result["forced"] else "graceful"
            return result
        except RbeeError as exc:
            outcome = exc.code
            raise
        finally:
            took = time.monotonic() - started
            self.registry.publish(
                WorkerShutdown(
                    type="worker_shutdown",
                    worker_id=row.worker_id,
                    node=str(row.node_id),  # type: ignore[attr-defined]
                    reason=reason,
                    outcome=outcome,
                    duration_s=took,
                )
            )

    async def _drain_and_stop(self, row: Worker, reason: str) -> dict[str, Any]:
        if row.state in (S.IDLE, S.BUSY):
            self.states.transition(row, S.DRAINING, reason)
        live = self.registry.live.get(row.worker_id)
        cut = 0
        if live is not None:
            live.draining = True
            if live.in_flight > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(live.no_streams.wait(), self.config.worker_stop_grace_s)
            cut = live.in_flight
        session = await self.inventory.session_for(row.node)
        result = await self.stop_process(session, row, self.config.worker_stop_grace_s)
        forced = bool(result["forced"]) or cut > 0
        if cut:
            why = f"forced: {cut} stream(s) still running after the grace period"
        else:
            why = "forced kill" if result["forced"] else "stopped"
        self.states.transition(row, S.STOPPED, why)
        return {"worker_id": row.worker_id, "stopped": result["stopped"], "forced": forced}

    async def stop_process(self, session: NodeSession, row: Worker, grace_s: float) -> Any:
        """Forget the worker here (registry, token, forward), then SIGTERM its
        process group on the node and SIGKILL it after `grace_s`. The helper's
        answer says whether it had to force."""
        live = self.registry.remove(row.worker_id)
        if live is not None:
            live.forget_address(self.access.tokens)
            session.close_forward(live.remote_port)
        self.access.token_file.drop(row.worker_id)
        return await session.ops.stop_worker(
            worker_id=row.worker_id,
            run_dir=session.run_dir,
            grace_s=grace_s,
            timeout=grace_s + 10.0,
        )

    async def stop_all(self, node_name: str | None = None) -> dict[str, int]:
        """Stop every live worker (of one node, or all this queen drives) in parallel."""
        query = Worker.select().where(Worker.state.in_([s.value for s in LIVE]))
        if node_name is not None:
            if self.leases is not None:
                await self.leases.ensure(node_name)
            query = query.where(Worker.node == node_name)
        elif self.leases is not None:
            query = query.where(Worker.node.in_(sorted(self.leases.driven())))
        started = time.monotonic()
        results = await asyncio.gather(
            *(self.shutdown(w.worker_id) for w in query), return_exceptions=True
        )
        # Each worker's outcome and duration is a `worker_shutdown` event; this is the whole.
        log.info("stopping %d worker(s) took %.1f s", len(results), time.monotonic() - started)
        counts = {"graceful": 0, "forced": 0, "failed": 0}
        for result in results:
            if isinstance(result, BaseException):
                counts["failed"] += 1
                log.warning("stopping a worker failed: %s", result)
            else:
                counts["forced" if result["forced"] else "graceful"] += 1
        return counts

    async def stop_idle(self, worker_id: str, idle_s: float) -> None:
        log.info("worker %s idle for %.0fs: stopping it", worker_id, idle_s)
        try:
            await self.shutdown(worker_id, f"idle for {idle_s:.0f}s")
        except RbeeError as exc:
            log.warning("stopping idle worker %s failed: %s", worker_id, exc.message)
