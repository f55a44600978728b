"""The supervisor: looks after every running worker, every interval.

For each ready worker it asks the node's helper whether the process lives and
calls the worker's `/health` through the tunnel:

- process gone                      -> failed at once
- health failed 3 times in a row    -> failed
- health call timed out while busy  -> hung
- a request in flight, no token for `hung_after_s` -> hung (a long generation
  that keeps producing tokens is busy, never hung)
- idle longer than `idle_stop_s`    -> stopped (not a failure)

A failed or hung worker is killed (SIGTERM, wait, SIGKILL of its group; its
open streams end with an `error` event) and started again under the restart
policy; when the policy says no, it stays `failed` with the reason, which
`workers list` shows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from rbee_queen.errors import RbeeError
from rbee_queen.store.tables import Worker
from rbee_queen.workers.access import WorkerAccess
from rbee_queen.workers.live import LiveWorker
from rbee_queen.workers.recovery import WorkerRecovery
from rbee_queen.workers.registry import WorkerRegistry
from rbee_queen.workers.states import WorkerState
from rbee_queen.workers.stopper import WorkerStopper

log = logging.getLogger("rbee.queen.supervisor")
S = WorkerState


@dataclass(frozen=True)
class SupervisorSettings:
    interval_s: float = 30.0
    health_timeout_s: float = 5.0
    failures_to_dead: int = 3
    hung_after_s: float = 60.0
    idle_stop_s: float = 300.0


class Supervisor:
    def __init__(
        self,
        registry: WorkerRegistry,
        access: WorkerAccess,
        recovery: WorkerRecovery,
        stopper: WorkerStopper,
        settings: SupervisorSettings,
    ) -> None:
        self.registry = registry
        self.access = access
        self.recovery = recovery
        self.stopper = stopper
        self.settings = settings
        self.failures: dict[str, int] = {}
        self.rounds = 0
        # Whether this queen drives the worker's node (its lease, nodes/lease.py).
        self.owns: Callable[[str], bool] = lambda node: True
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    def reconfigure(self, settings: SupervisorSettings) -> None:
        """New settings from a reload: the wait in progress ends, the next one
        uses the new interval; no check in progress is cut short."""
        self.settings = settings
        self._changed.set()
        self.start()

    def start(self) -> None:
        if self.settings.interval_s > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name="worker-supervisor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while self.settings.interval_s > 0:
            if not await self._waited():
                continue
            try:
                await self.check_all()
            except Exception:  # one bad round must not end supervision
                log.exception("supervisor round failed")
        self._task = None

    async def _waited(self) -> bool:
        """Sleep one interval; False when the settings changed meanwhile."""
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), self.settings.interval_s)
        except TimeoutError:
            return True
        return False

    async def check_all(self) -> None:
        self.rounds += 1
        live = list(self.registry.live.values())
        await asyncio.gather(*(self.check(w) for w in live), return_exceptions=True)

    async def check(self, live: LiveWorker) -> None:
        if not self.owns(live.node):
            return
        row = Worker.get_or_none(Worker.worker_id == live.worker_id)
        if row is None or row.state not in (S.IDLE, S.BUSY):
            return
        stalled = self.registry.stalled_for(live.worker_id)
        if stalled is not None and stalled > self.settings.hung_after_s:
            await self.recovery.recover(
                live.worker_id, S.HUNG, f"no token for {stalled:.0f}s with a request in flight"
            )
            return
        verdict = await self._health(live)
        if verdict == "ok":
            self.failures.pop(live.worker_id, None)
            idle = self.registry.idle_for(live.worker_id)
            if live.in_flight == 0 and idle is not None and idle > self.settings.idle_stop_s:
                await self.stopper.stop_idle(live.worker_id, idle)
            return
        self.recovery.note_health_failure(live.worker_id, verdict)
        if verdict == "process gone":
            await self.recovery.recover(live.worker_id, S.FAILED, "worker process died")
        elif verdict == "timeout" and live.in_flight > 0:
            # in_flight, not the row: the busy record waits for the first token.
            await self.recovery.recover(live.worker_id, S.HUNG, "health call timed out while busy")
        else:
            count = self.failures[live.worker_id] = self.failures.get(live.worker_id, 0) + 1
            if count >= self.settings.failures_to_dead:
                self.failures.pop(live.worker_id, None)
                await self.recovery.recover(
                    live.worker_id, S.FAILED, f"{count} failed health checks in a row ({verdict})"
                )

    async def _health(self, live: LiveWorker) -> str:
        """'ok', 'process gone', 'timeout' or a short reason."""
        try:
            alive = await self.recovery.process_alive(live)
        except RbeeError as exc:
            return f"node: {exc.code}"
        if not alive:
            return "process gone"
        started = time.monotonic()
        try:
            response = await self.access.http.get(
                f"{live.url}/health", timeout=self.settings.health_timeout_s
            )
        except httpx.TimeoutException:
            return "timeout"
        except httpx.HTTPError as exc:
            return f"health call failed: {type(exc).__name__}"
        log.debug("health %s %.1f ms", live.worker_id, (time.monotonic() - started) * 1000)
        return "ok" if response.status_code == 200 else f"health answered {response.status_code}"
