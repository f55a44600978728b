"""What the worker manager does for the supervisor: progress and idle clocks,
recovering a dead or hung worker under the restart policy, stopping idle
workers, and re-adopting workers that outlived a queen restart.

A mixin of `WorkerManager` (it uses the manager's sessions, forwards and
tokens); kept apart so starting and relaying stay readable there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from rbee_queen.errors import RbeeError, WorkerStartFailed
from rbee_queen.store.tables import Worker
from rbee_queen.workers.restart_policy import RestartPolicy
from rbee_queen.workers.states import ALLOWED, LIVE, RECOVERING, WorkerState, transition

if TYPE_CHECKING:
    from rbee_queen.audit import AuditLog
    from rbee_queen.fleet.session import NodeSession
    from rbee_queen.fleet.worker_auth import WorkerTokens
    from rbee_queen.store.tables import Node
    from rbee_queen.workers.manager import LiveWorker

log = logging.getLogger("rbee.queen.lifecycle")
S = WorkerState
Publish = Callable[..., object]
KILL_GRACE_S = 2.0  # a hung or failed worker gets little time to go quietly


class TokenFile:
    """Worker tokens on the queen's disk (0600), so a restarted queen can still
    talk to the workers it re-adopts. They never leave the queen's machine."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def save(self, tokens: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(tokens, fh)
        os.replace(tmp, self.path)

    def put(self, worker_id: str, token: str) -> None:
        self.save({**self.load(), worker_id: token})

    def drop(self, worker_id: str) -> None:
        tokens = self.load()
        if tokens.pop(worker_id, None) is not None:
            self.save(tokens)


class LifecycleMixin:
    # Set up by `init_lifecycle` from WorkerManager.__init__.
    policy: RestartPolicy
    publish: Publish
    token_file: TokenFile
    _progress: dict[str, float]
    _idle_since: dict[str, float]
    _recovering: set[str]
    adoption_done: asyncio.Event

    if TYPE_CHECKING:  # what the mixin uses of WorkerManager
        _live: dict[str, LiveWorker]
        tokens: WorkerTokens
        http: httpx.AsyncClient
        audit: AuditLog | None

        @property
        def live(self) -> dict[str, LiveWorker]: ...

        async def session_for(self, node: Node) -> NodeSession: ...

        async def _spawn_and_wait(
            self, session: NodeSession, node: Node, row: Worker, path: str, slots: int
        ) -> LiveWorker: ...

        async def shutdown(
            self, worker_id: str, reason: str = "shutdown requested"
        ) -> dict[str, Any]: ...

        @staticmethod
        def model_dir(node_name: str, model_ref: str) -> str | None: ...

    def init_lifecycle(self, policy: RestartPolicy, token_file: TokenFile) -> None:
        self.policy = policy
        self.publish = lambda *args, **kwargs: None  # the queen's event bus, once wired
        self.token_file = token_file
        self._progress = {}
        self._idle_since = {}
        self._recovering = set()
        # Set once the workers of a previous queen are adopted or cleaned up;
        # until then no new worker starts, so none is started twice.
        self.adoption_done = asyncio.Event()

    # --- clocks the supervisor reads ------------------------------------------------

    def mark_progress(self, worker_id: str) -> None:
        self._progress[worker_id] = time.monotonic()

    def mark_idle(self, worker_id: str) -> None:
        self._idle_since[worker_id] = time.monotonic()
        self._progress.pop(worker_id, None)

    def stalled_for(self, worker_id: str) -> float | None:
        """Seconds since the last token of a worker with a request in flight."""
        live = self.live.get(worker_id)
        if live is None or live.in_flight == 0 or worker_id not in self._progress:
            return None
        return time.monotonic() - self._progress[worker_id]

    def idle_for(self, worker_id: str) -> float | None:
        live = self.live.get(worker_id)
        if live is None or live.in_flight > 0:
            return None
        return time.monotonic() - self._idle_since.setdefault(worker_id, time.monotonic())

    async def process_alive(self, live: Any) -> bool:
        row = Worker.get_by_id(live.worker_id)
        session = await self.session_for(row.node)
        status = await session.call(
            "worker_status", worker_id=live.worker_id, run_dir=session.run_dir, timeout=10.0
        )
        return bool(status["alive"])

    def note_health_failure(self, worker_id: str, verdict: str) -> None:
        self.publish("health_failed", worker_id=worker_id, reason=verdict)

    # --- recovery ---------------------------------------------------------------------

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
        log.warning("worker %s is %s: %s", worker_id, state.value, reason)
        transition(row, state, reason)
        key = (str(row.node_id), row.model_ref)  # type: ignore[attr-defined]
        live = self._live.get(worker_id)
        slots = live.slots if live is not None else 1  # a restart keeps the slot count
        while True:
            await self._kill(row)
            decision = self.policy.failed(key)
            if not decision.restart:
                transition(row, S.FAILED, decision.reason)
                log.warning("worker %s not restarted: %s", worker_id, decision.reason)
                return
            transition(row, S.RESTARTING, f"{decision.reason} in {decision.delay_s:.1f}s")
            self.publish("worker_restarted", worker_id=worker_id, reason=decision.reason)
            if self.audit is not None:
                self.audit.record("worker.restarted", worker_id=worker_id, reason=decision.reason)
            await asyncio.sleep(decision.delay_s)
            try:
                await self._respawn(row, slots)
                self.policy.started(key)
                return
            except RbeeError as exc:
                transition(row, S.FAILED, exc.message)

    async def _kill(self, row: Worker) -> None:
        transition(row, S.KILLING, "stopping the process group")
        try:
            session = await self.session_for(row.node)
            live = self._live.pop(row.worker_id, None)
            if live is not None:
                self.tokens.forget(live.local_port)
                session.close_forward(live.remote_port)
            result = await session.call(
                "stop_worker",
                worker_id=row.worker_id,
                run_dir=session.run_dir,
                grace_s=KILL_GRACE_S,
                timeout=KILL_GRACE_S + 10.0,
            )
            forced = bool(result.get("forced"))
        except RbeeError as exc:  # the node is gone too: nothing left to signal
            log.warning("could not kill worker %s: %s", row.worker_id, exc.message)
            forced = False
        self.publish("worker_stopped", worker_id=row.worker_id, forced=forced)
        if self.audit is not None:
            self.audit.record("worker.killed", worker_id=row.worker_id, forced=forced)

    async def _respawn(self, row: Worker, slots: int) -> None:
        node = row.node
        path = self.model_dir(node.name, row.model_ref)
        if path is None:
            raise WorkerStartFailed(f"{row.model_ref} is no longer on {node.name}")
        session = await self.session_for(node)
        transition(row, S.SPAWNING, "restart")
        try:
            await self._spawn_and_wait(session, node, row, path, slots)
        except RbeeError:
            raise  # already says what went wrong
        except Exception as exc:
            raise WorkerStartFailed(f"restart failed: {type(exc).__name__}") from exc

    async def stop_idle(self, worker_id: str, idle_s: float) -> None:
        log.info("worker %s idle for %.0fs: stopping it", worker_id, idle_s)
        try:
            await self.shutdown(worker_id, f"idle for {idle_s:.0f}s")
        except RbeeError as exc:
            log.warning("stopping idle worker %s failed: %s", worker_id, exc.message)

    # --- after a queen restart ----------------------------------------------------------

    async def adopt_all(self) -> dict[str, int]:
        """Find the workers a previous queen left running: adopt the healthy ones,
        clean up the dead ones. Never starts a duplicate, never kills a healthy one."""
        states = [s.value for s in LIVE | RECOVERING]
        rows = list(Worker.select().where(Worker.state.in_(states)))
        try:
            results = await asyncio.gather(*(self._adopt(r) for r in rows), return_exceptions=True)
        finally:
            self.adoption_done.set()
        counts = {"adopted": 0, "cleaned": 0, "unreachable": 0}
        for result in results:
            key = result if isinstance(result, str) else "unreachable"
            counts[key] = counts.get(key, 0) + 1
        if rows:
            log.info("re-adoption: %s", counts)
        return counts

    async def _adopt(self, row: Worker) -> str:
        session = await self.session_for(row.node)
        status = await session.call(
            "worker_status", worker_id=row.worker_id, run_dir=session.run_dir
        )
        token = self.token_file.load().get(row.worker_id)
        adoptable = row.state in LIVE and row.state != S.DRAINING
        if status["alive"] and status["port"] and token and adoptable:
            local_port = await session.forward(int(status["port"]))
            self.tokens.bind(local_port, token)
            try:
                health = await self.http.get(f"http://127.0.0.1:{local_port}/health", timeout=5)
            except httpx.HTTPError:
                health = None
            if health is not None and health.status_code == 200:
                from rbee_queen.workers.manager import LiveWorker  # a cycle otherwise

                self._live[row.worker_id] = LiveWorker(
                    row.worker_id,
                    str(row.node_id),  # type: ignore[attr-defined]
                    row.model_ref,
                    int(status["port"]),
                    local_port,
                    session=session,
                    device=row.device,
                )
                if row.state == S.SPAWNING:
                    transition(row, S.LOADING, "re-adopted after a queen restart")
                transition(row, S.IDLE, "re-adopted after a queen restart")
                self.mark_idle(row.worker_id)
                return "adopted"
            self.tokens.forget(local_port)
            session.close_forward(int(status["port"]))
        await session.call(
            "stop_worker", worker_id=row.worker_id, run_dir=session.run_dir, grace_s=KILL_GRACE_S
        )
        if S.KILLING in ALLOWED[WorkerState(row.state)]:
            transition(row, S.KILLING, "found dead, unhealthy or stopping after a queen restart")
        transition(row, S.STOPPED, "cleaned up after a queen restart")
        self.token_file.drop(row.worker_id)
        return "cleaned"
