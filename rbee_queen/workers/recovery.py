"""Recovering a failed or hung worker: kill its process group, then start it
again under the restart policy (backoff, at most N in a row, a circuit breaker
per model and node). A restarted worker keeps its id and slots. A worker the
node's OOM killer ended is WORKER_OOM (its cause `oom`), and its restart gets
a memory bound raised past the one it died under, never the same size."""

from __future__ import annotations

import asyncio
import logging

from rbee_queen.errors import RbeeError, WorkerStartFailed
from rbee_queen.nodes.inventory import NodeInventory
from rbee_queen.store.tables import Worker
from rbee_queen.workers.live import LiveWorker
from rbee_queen.workers.oom import oom_of
from rbee_queen.workers.registry import Publish, WorkerRegistry
from rbee_queen.workers.restart_policy import RestartPolicy
from rbee_queen.workers.starter import WorkerStarter
from rbee_queen.workers.states import StateRecorder, WorkerState
from rbee_queen.workers.stopper import WorkerStopper
from rbee_wire.helper_ops import WorkerOomReport
from rbee_wire.queen_events import HealthFailed, WorkerKilled, WorkerRestarted

log = logging.getLogger("rbee.queen.recovery")
S = WorkerState
KILL_GRACE_S = 2.0  # a hung or failed worker gets little time to go quietly


class WorkerRecovery:
    def __init__(
        self,
        inventory: NodeInventory,
        registry: WorkerRegistry,
        starter: WorkerStarter,
        stopper: WorkerStopper,
        policy: RestartPolicy,
        publish: Publish,
    ) -> None:
        self.inventory = inventory
        self.registry = registry
        self.starter = starter
        self.stopper = stopper
        self.policy = policy
        self.publish = publish
        self.states: StateRecorder = registry.states
        self._recovering: set[str] = set()

    async def process_alive(self, live: LiveWorker) -> bool:
        """Whether the worker's process still runs on its node (its helper says)."""
        row = Worker.get_by_id(live.worker_id)
        session = await self.inventory.session_for(row.node)
        status = await session.ops.worker_status(
            worker_id=live.worker_id, run_dir=session.run_dir, timeout=10.0
        )
        return bool(status["alive"])

    def note_health_failure(self, worker_id: str, verdict: str) -> None:
        self.publish(HealthFailed(type="health_failed", worker_id=worker_id, reason=verdict))

    async def recover(self, worker_id: str, state: WorkerState, reason: str) -> None:
        """Kill a failed or hung worker and start it again while the policy allows."""
        if worker_id in self._recovering:
            return
        self._recovering.add(worker_id)
        try:
            await self._recover(worker_id, state, reason)
        finally:
            self._recovering.discard(worker_id)

    async def _recover(self, worker_id: str, state: WorkerState, reason: str) -> None:
        row = Worker.get_by_id(worker_id)
        cause = state.value
        oom = await self._oom_report(row)
        if oom is not None:
            reason = self.starter.note_oom(row, oom, "serving").message
            cause = "oom"
        log.warning("worker %s is %s: %s", worker_id, state.value, reason)
        self.states.transition(row, state, reason)
        key = (str(row.node_id), row.model_ref)  # type: ignore[attr-defined]
        live = self.registry.live.get(worker_id)
        slots = live.slots if live is not None else 1  # a restart keeps the slot count
        while True:
            await self._kill(row)
            decision = self.policy.failed(key)
            if not decision.restart:
                self.states.transition(row, S.FAILED, decision.reason)
                log.warning("worker %s not restarted: %s", worker_id, decision.reason)
                return
            why = f"{decision.reason} in {decision.delay_s:.1f}s"
            self.states.transition(row, S.RESTARTING, why)
            self.publish(
                WorkerRestarted(
                    type="worker_restarted",
                    worker_id=worker_id,
                    reason=decision.reason,
                    cause=cause,
                )
            )
            await asyncio.sleep(decision.delay_s)
            try:
                await self._respawn(row, slots)
                self.policy.started(key)
                return
            except RbeeError as exc:
                self.states.transition(row, S.FAILED, exc.message)

    async def _oom_report(self, row: Worker) -> WorkerOomReport | None:
        """The helper's OOM report of the worker's process, where it counted one."""
        try:
            session = await self.inventory.session_for(row.node)
            status = await session.ops.worker_status(
                worker_id=row.worker_id, run_dir=session.run_dir, timeout=10.0
            )
        except RbeeError:
            return None  # the node is gone: no counter to read
        return oom_of(status)

    async def _kill(self, row: Worker) -> None:
        self.states.transition(row, S.KILLING, "stopping the process group")
        try:
            session = await self.inventory.session_for(row.node)
            result = await self.stopper.stop_process(session, row, KILL_GRACE_S)
            forced = bool(result.get("forced"))
        except RbeeError as exc:  # the node is gone too: nothing left to signal
            log.warning("could not kill worker %s: %s", row.worker_id, exc.message)
            self.registry.remove(row.worker_id)
            forced = False
        self.publish(WorkerKilled(type="worker_killed", worker_id=row.worker_id, forced=forced))

    async def _respawn(self, row: Worker, slots: int) -> None:
        node = row.node
        path = self.starter.model_dir(node.name, row.model_ref)
        if path is None:
            raise WorkerStartFailed(f"{row.model_ref} is no longer on {node.name}")
        session = await self.inventory.session_for(node)
        self.states.transition(row, S.SPAWNING, "restart")
        try:
            await self.starter.spawn_and_wait(session, node, row, path, slots)
        except RbeeError:
            raise  # already says what went wrong
        except Exception as exc:
            raise WorkerStartFailed(f"restart failed: {type(exc).__name__}") from exc
