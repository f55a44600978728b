"""Re-adopting the workers a previous queen left running (see deployment.md):
a healthy one is forwarded to again and served; a dead, unhealthy or stopping
one is cleaned up. Never starts a duplicate, never kills a healthy worker."""

from __future__ import annotations

import asyncio
import logging

from rbee_queen.fleet.session import NodeSession
from rbee_queen.nodes.inventory import NodeInventory
from rbee_queen.store.tables import Worker
from rbee_queen.workers.access import WorkerAccess
from rbee_queen.workers.live import LiveWorker
from rbee_queen.workers.recovery import KILL_GRACE_S
from rbee_queen.workers.registry import WorkerRegistry
from rbee_queen.workers.states import ALLOWED, LIVE, RECOVERING, StateRecorder, WorkerState

log = logging.getLogger("rbee.queen.adoption")
S = WorkerState
READOPTED = "re-adopted after a queen restart"


class WorkerAdoption:
    def __init__(
        self, inventory: NodeInventory, registry: WorkerRegistry, access: WorkerAccess
    ) -> None:
        self.inventory = inventory
        self.registry = registry
        self.access = access
        self.states: StateRecorder = registry.states

    async def adopt_all(self, nodes: set[str] | None = None) -> dict[str, int]:
        """Adopt or clean up every worker the database lists as live (on `nodes`,
        those this queen has just taken the lease of); new starts wait until
        this is done, so none is started twice."""
        states = [s.value for s in LIVE | RECOVERING]
        query = Worker.select().where(Worker.state.in_(states))
        if nodes is not None:
            query = query.where(Worker.node.in_(sorted(nodes)))
        rows = list(query)
        try:
            results = await asyncio.gather(*(self._adopt(r) for r in rows), return_exceptions=True)
        finally:
            self.registry.adoption_done.set()
        counts = {"adopted": 0, "cleaned": 0, "unreachable": 0}
        for result in results:
            key = result if isinstance(result, str) else "unreachable"
            counts[key] = counts.get(key, 0) + 1
        if rows:
            log.info("re-adoption: %s", counts)
        return counts

    def let_go(self, nodes: set[str]) -> None:
        """Another queen took these nodes over: forget their workers here (it
        re-adopts them); nothing is stopped."""
        for live in list(self.registry.live.values()):
            if live.node in nodes:
                self.registry.remove(live.worker_id)
                live.forget_address(self.access.tokens)
                if live.session is not None and live.direct_host is None:
                    live.session.close_forward(live.remote_port)

    async def _adopt(self, row: Worker) -> str:
        session = await self.inventory.session_for(row.node)
        status = await session.ops.worker_status(worker_id=row.worker_id, run_dir=session.run_dir)
        token = self.access.token_file.load().get(row.worker_id)
        adoptable = row.state in LIVE and row.state != S.DRAINING
        if status["alive"] and status["port"] and token and adoptable:
            if await self._serve_again(session, row, int(status["port"]), token):
                return "adopted"
        await session.ops.stop_worker(
            worker_id=row.worker_id, run_dir=session.run_dir, grace_s=KILL_GRACE_S
        )
        if S.KILLING in ALLOWED[WorkerState(row.state)]:
            why = "found dead, unhealthy or stopping after a queen restart"
            self.states.transition(row, S.KILLING, why)
        self.states.transition(row, S.STOPPED, "cleaned up after a queen restart")
        self.access.token_file.drop(row.worker_id)
        return "cleaned"

    async def _serve_again(
        self, session: NodeSession, row: Worker, remote_port: int, token: str
    ) -> bool:
        """Forward to the worker; registered when its /health answers 200."""
        local_port = await self.access.forward(session, remote_port, token)
        health = await self.access.get(f"http://127.0.0.1:{local_port}/health", timeout=5)
        if health is None or health.status_code != 200:
            self.access.tokens.forget(local_port)
            session.close_forward(remote_port)
            return False
        live = LiveWorker(
            row.worker_id,
            str(row.node_id),  # type: ignore[attr-defined]
            row.model_ref,
            remote_port,
            local_port,
            session=session,
            device=row.device,
        )
        self.registry.add(live)
        if row.state == S.SPAWNING:
            self.states.transition(row, S.LOADING, READOPTED)
        self.states.transition(row, S.IDLE, READOPTED)
        return True
