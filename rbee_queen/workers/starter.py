"""Starting a worker: one per (node, model, device), on demand.

The path: the model's folder on the node, the device and RAM/VRAM preflight,
a `Worker` row, the helper's `spawn_worker` (the token in the environment,
never argv), the port the worker writes once it listens, a forward (or the
node's address, for direct access), then `/health` until the model is loaded.
A start that fails anywhere leaves no process and a `stopped` row with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable

from rbee_queen.config import QueenConfig
from rbee_queen.errors import (
    BackendUnavailable,
    InsufficientVram,
    InvalidRequest,
    LoadingTimeout,
    ModelNotFound,
    RbeeError,
    VramOom,
    WorkerOom,
    WorkerStartFailed,
)
from rbee_queen.fleet.session import NodeSession
from rbee_queen.fleet.worker_auth import TOKEN_ENV
from rbee_queen.nodes.inventory import NodeInventory, get_node
from rbee_queen.store.tables import Node, Worker
from rbee_queen.workers.access import WorkerAccess
from rbee_queen.workers.devices import engine_for
from rbee_queen.workers.live import LiveWorker, draining_error, node_address
from rbee_queen.workers.memory_bounds import (
    RAISED,
    SOURCE_TEXT,
    RaisedBounds,
    bound_setting,
    source_of,
)
from rbee_queen.workers.oom import oom_error, oom_event, oom_of
from rbee_queen.workers.registry import WorkerRegistry
from rbee_queen.workers.resources import preflight_worker
from rbee_queen.workers.restart_policy import RestartPolicy
from rbee_queen.workers.states import StateRecorder, WorkerState
from rbee_queen.workers.stopper import WorkerStopper
from rbee_wire import codec
from rbee_wire.error_text import shown
from rbee_wire.helper_ops import MemoryBound, WorkerOomReport, WorkerStatusResult

log = logging.getLogger("rbee.queen.workers")
S = WorkerState
# The folder on the node a worker loads for a model reference (None: not a
# reference the queen can place); given by the composition root.
ModelDir = Callable[[str, str], "str | None"]


class WorkerStarter:
    def __init__(
        self,
        config: QueenConfig,
        inventory: NodeInventory,
        registry: WorkerRegistry,
        access: WorkerAccess,
        stopper: WorkerStopper,
        policy: RestartPolicy,
        model_dir: ModelDir,
    ) -> None:
        self.config = config
        self.inventory = inventory
        self.registry = registry
        self.access = access
        self.stopper = stopper
        self.states: StateRecorder = registry.states
        self.policy = policy
        self.model_dir = model_dir
        self.raised_bounds = RaisedBounds()
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def ensure_worker(
        self, node_name: str, model_ref: str, slots: int = 1, device: str = "cpu"
    ) -> LiveWorker:
        """A ready worker of the model on the node, started if there is none."""
        node = get_node(node_name)
        await self.registry.adoption_done.wait()
        lock = self._locks.setdefault((node_name, model_ref), asyncio.Lock())
        async with lock:  # two cold requests for one model start one worker
            live = self.registry.running(node_name, model_ref, device)
            if live is not None:
                if live.draining:
                    raise draining_error(live)
                row = Worker.get_or_none(Worker.worker_id == live.worker_id)
                if row is not None and row.state in (S.IDLE, S.BUSY):
                    return live
            return await self._start(node, model_ref, slots, device)

    async def _start(self, node: Node, model_ref: str, slots: int, device: str) -> LiveWorker:
        key = (node.name, model_ref)
        if self.policy.circuit_open(key):
            raise WorkerStartFailed(
                f"not starting {model_ref} on {node.name}: it failed "
                f"{self.policy.settings.breaker_failures} times in "
                f"{self.policy.settings.breaker_window_s:g}s (circuit open); see its log"
            )
        try:
            live = await self._start_new(node, model_ref, slots, device)
        except (WorkerStartFailed, LoadingTimeout):
            self.policy.failed(key)  # counts towards the circuit breaker
            raise
        self.policy.started(key)
        return live

    async def _start_new(self, node: Node, model_ref: str, slots: int, device: str) -> LiveWorker:
        path = self.model_dir(node.name, model_ref)
        if path is None:
            raise InvalidRequest(
                f"model reference {shown(model_ref)} is not supported: use file:/absolute/path",
                fields=[{"field": "model", "constraint": "pattern", "message": "file:/path"}],
            )
        session = await self.inventory.session_for(node)
        info = await session.ops.path_info(path=path)
        if not info["is_dir"]:
            raise ModelNotFound(f"model not found on {node.name}: {shown(path)}")
        # The device (a GPU picked or checked), then RAM/VRAM, before spawning.
        setting = bound_setting(node, model_ref, self.config.worker_memory_limit_mib)
        raised = self.raised_bounds.next_limit(node.name, model_ref)
        placement = await preflight_worker(
            session,
            node.name,
            path,
            device,
            model_ref=model_ref,
            slots=slots,
            max_temp_c=self.config.gpu_max_temp_c,
            memory_setting_mib=setting.mib,
            raised_bytes=raised,
        )
        row = Worker.create(
            worker_id=f"w-{secrets.token_hex(4)}",
            node=node,
            model_ref=model_ref,
            backend=engine_for(placement.device),
            device=placement.device,
            gpu_name=placement.gpu_name,
            state=S.SPAWNING.value,
            memory_limit_bytes=placement.memory_limit_bytes,
            memory_limit_source=source_of(placement.memory_limit_bytes, setting, raised),
        )
        self.states.record_new(row, f"requested; {_planned_bound(row)}")
        try:
            return await self.spawn_and_wait(session, node, row, path, slots)
        except BaseException as exc:
            await self._stop_after_failure(session, row, exc)
            raise

    async def spawn_and_wait(
        self, session: NodeSession, node: Node, row: Worker, path: str, slots: int
    ) -> LiveWorker:
        """Spawn the worker of `row` on its node and wait until its model is loaded."""
        direct_host = node_address(session) if node.worker_access == "direct" else None
        token = self.access.tokens.new()  # in the spawn environment, never argv
        self.access.token_file.put(row.worker_id, token)  # a restarted queen re-adopts with it
        spawned = await session.ops.spawn_worker(
            worker_id=row.worker_id,
            run_dir=session.run_dir,
            argv=worker_argv(node, row, path, slots, direct_host),
            pythonpath=session.helper_dir,
            env={"HF_HUB_OFFLINE": "1", TOKEN_ENV: token},
            memory_limit_bytes=self._memory_limit(row),
            device=row.device,
        )
        row.pid = spawned["pid"]
        row.save()
        deadline = time.monotonic() + self.config.worker_loading_timeout_s
        remote_port = await self._wait_for_port(session, row, deadline)
        row.port = remote_port
        bound = _bound_text(spawned.get("memory_bound"), row.memory_limit_source)
        self.states.transition(row, S.LOADING, f"listening on node port {remote_port}; {bound}")
        if direct_host is not None:
            local_port = 0  # no forward: the queen calls the node's address
            self.access.tokens.bind(remote_port, token, host=direct_host)
        else:
            local_port = await self.access.forward(session, remote_port, token)
        live = LiveWorker(
            row.worker_id,
            node.name,
            row.model_ref,
            remote_port,
            local_port,
            slots=slots,
            session=session,
            direct_host=direct_host,
            device=row.device,
        )
        await self.wait_until_ready(session, row, live, deadline)
        row.vram_bytes = await self._loaded_vram(live)  # saved with the state below
        self.registry.add(live)
        self.states.transition(row, S.IDLE, "model loaded")
        return live

    async def _wait_for_port(self, session: NodeSession, row: Worker, deadline: float) -> int:
        while True:
            status = await session.ops.worker_status(
                worker_id=row.worker_id, run_dir=session.run_dir
            )
            if status["port"]:
                return int(status["port"])
            if not status["alive"]:
                raise await self.exit_error(session, row, status, "starting")
            if time.monotonic() > deadline:
                raise LoadingTimeout(f"worker {row.worker_id} did not start listening in time")
            await asyncio.sleep(0.1)

    async def wait_until_ready(
        self, session: NodeSession | None, row: Worker, live: LiveWorker, deadline: float
    ) -> None:
        """Poll `/health` until it answers 200; a 500 is the load's failure."""
        while True:
            resp = await self.access.get(f"{live.url}/health", timeout=5.0)
            if resp is not None and resp.status_code == 200:
                return
            if resp is not None and resp.status_code == 500:
                raise load_failure(codec.decode_object(resp.content) or {})
            if time.monotonic() > deadline:
                raise LoadingTimeout(
                    f"worker {row.worker_id} still loading after "
                    f"{self.config.worker_loading_timeout_s:g}s"
                )
            if resp is None and session is not None:
                status = await session.ops.worker_status(
                    worker_id=row.worker_id, run_dir=session.run_dir
                )
                if not status["alive"]:
                    raise await self.exit_error(session, row, status, "loading")
            await asyncio.sleep(0.1)

    def _memory_limit(self, row: Worker) -> int:
        """The worker's RAM bound: as placed, raised past an OOM seen since (0:
        none); a raise is recorded on its row."""
        limit = int(row.memory_limit_bytes or 0)
        raised = self.raised_bounds.next_limit(row.node.name, row.model_ref) or 0
        if limit and raised > limit:
            row.memory_limit_bytes, row.memory_limit_source = raised, RAISED
            row.save()
            return raised
        return limit

    async def exit_error(
        self, session: NodeSession, row: Worker, status: WorkerStatusResult, phase: str
    ) -> RbeeError:
        """Why a worker's process is gone: WORKER_OOM where its memory group counted
        an OOM kill (published, and the next start's bound raised), else its log."""
        report = oom_of(status)
        if report is None:
            return WorkerStartFailed(
                f"worker exited while {phase}: {await _last_log_line(session, row)}"
            )
        return self.note_oom(row, report, phase)

    def note_oom(self, row: Worker, report: WorkerOomReport, phase: str) -> WorkerOom:
        node = row.node.name
        next_limit = self.raised_bounds.raise_after(node, row.model_ref, report)
        exc = oom_error(row.worker_id, node, row.model_ref, phase, report, next_limit)
        log.warning("%s", exc.message)
        self.registry.publish(oom_event(exc, row.model_ref))
        return exc

    async def _loaded_vram(self, live: LiveWorker) -> int | None:
        """What a loaded worker holds on its GPU(s), from its /v1/ready: the next
        start of the model on this GPU model is checked against it. None on the
        CPU, or when the worker does not answer (the start goes on without it)."""
        resp = await self.access.get(f"{live.url}/v1/ready", timeout=5.0)
        if resp is None or resp.status_code != 200:
            return None
        vram = (codec.decode_object(resp.content) or {}).get("vram_bytes")
        return vram if isinstance(vram, int) and not isinstance(vram, bool) else None

    async def _stop_after_failure(
        self, session: NodeSession, row: Worker, exc: BaseException
    ) -> None:
        reason = exc.message if isinstance(exc, RbeeError) else type(exc).__name__
        log.warning("worker %s failed to start: %s", row.worker_id, reason)
        row = Worker.get_by_id(row.worker_id)
        if row.state != S.FAILED:
            self.states.transition(row, S.FAILED, reason)
        self.states.transition(row, S.KILLING, "start failed")
        try:
            await asyncio.shield(
                self.stopper.stop_process(session, row, self.config.worker_stop_grace_s)
            )
        finally:
            self.states.transition(row, S.STOPPED, "start failed")


def worker_argv(
    node: Node, row: Worker, path: str, slots: int, direct_host: str | None
) -> list[str]:
    argv = [node.worker_python or "python3", "-m", "rbee_worker", "--worker-id", row.worker_id]
    argv += ["--model", path, "--backend", row.backend, "--device", row.device]
    argv += ["--host", "127.0.0.1", "--port", "0", "--slots", str(slots)]
    if direct_host is not None:
        argv += ["--direct-host", direct_host]
    return argv


def _planned_bound(row: Worker) -> str:
    """The memory bound a new worker is to get, and what set it, for its first event."""
    source = SOURCE_TEXT.get(row.memory_limit_source or "", "?")
    if not row.memory_limit_bytes:
        return f"no memory bound ({source})"
    return f"memory bound {row.memory_limit_bytes // 1024**2} MiB ({source})"


def _bound_text(bound: MemoryBound | None, source: str | None) -> str:
    """Which memory bound the node gave the worker, and what set it, for its history."""
    if not bound or bound.get("kind") in (None, "none"):
        reason = (bound or {}).get("reason", "not reported")
        return f"no memory bound ({reason})"
    mib = bound.get("limit_bytes", 0) // 1024**2
    return f"memory bound {bound.get('kind')}: {mib} MiB ({SOURCE_TEXT.get(source or '', '?')})"


async def _last_log_line(session: NodeSession, row: Worker) -> str:
    tail = await session.ops.log_tail(worker_id=row.worker_id, run_dir=session.run_dir, lines=20)
    lines = [line for line in tail["lines"] if line.strip()]
    return lines[-1].strip() if lines else "no output"


def load_failure(health: dict[str, object]) -> RbeeError:
    """A worker's failed load (its /health 500 body) as the error its code names:
    a GPU stack the node cannot use is BACKEND_UNAVAILABLE, a cache that does not
    fit INSUFFICIENT_VRAM, a CUDA out-of-memory VRAM_OOM; anything else a failed start."""
    message = str(health.get("message") or "no reason given")
    code = health.get("code")
    if code == BackendUnavailable.code:
        return BackendUnavailable(f"the worker cannot use its GPU: {message}")
    if code == InsufficientVram.code:
        return InsufficientVram(f"the worker ran out of VRAM while loading: {message}")
    if code == VramOom.code:
        return VramOom(f"the worker ran out of GPU memory while loading: {message}")
    return WorkerStartFailed(f"worker could not load the model: {message}")
