"""The queen's long-lived parts, built once in the lifespan and shared by routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from peewee import SqliteDatabase
from starlette.requests import Request

from rbee_queen.audit import AuditLog
from rbee_queen.config import QueenConfig
from rbee_queen.eventbus import EventBus
from rbee_queen.fleet.known_hosts import HostKeyStore
from rbee_queen.fleet.pool import PoolLimits, SessionPool
from rbee_queen.keys import KeyRing
from rbee_queen.metrics import QueenMetrics
from rbee_queen.models.operations import ModelManager
from rbee_queen.nodes.health import HealthMonitor
from rbee_queen.nodes.install import Installer
from rbee_queen.nodes.inventory import NodeInventory
from rbee_queen.store.db import open_database
from rbee_queen.store.tables import Worker
from rbee_queen.workers.manager import WorkerManager
from rbee_queen.workers.states import WorkerState, on_transition
from rbee_queen.workers.supervisor import Supervisor, SupervisorSettings

log = logging.getLogger("rbee.queen")


@dataclass
class Services:
    config: QueenConfig
    db: SqliteDatabase
    pool: SessionPool
    inventory: NodeInventory
    workers: WorkerManager
    keys: KeyRing
    audit: AuditLog
    health: HealthMonitor = field(kw_only=True)
    installer: Installer = field(kw_only=True)
    models: ModelManager = field(kw_only=True)
    bus: EventBus = field(default_factory=EventBus)
    metrics: QueenMetrics = field(default_factory=QueenMetrics)
    _closers: list[Callable[[], None]] = field(default_factory=list)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def __post_init__(self) -> None:
        # Metrics are a function of the events; worker transitions become events.
        self.bus.add_listener(self.metrics.observe)
        self._closers.append(on_transition(self._publish_transition))
        self.health.listener = self._publish_node
        self.workers.publish = self.bus.publish
        self.supervisor = Supervisor(
            self.workers,
            SupervisorSettings(
                interval_s=self.config.supervisor_interval_s,
                health_timeout_s=self.config.worker_health_timeout_s,
                hung_after_s=self.config.hung_after_s,
                idle_stop_s=self.config.idle_stop_s or float("inf"),
            ),
        )

    async def start_background(self) -> None:
        """Loops that run for the queen's life, and re-adoption of the workers a
        previous queen left running (in the background: a node that does not
        answer must not hold up the start)."""
        self.health.start()
        self.supervisor.start()
        adoption = asyncio.create_task(self.workers.adopt_all(), name="re-adoption")
        self._tasks.add(adoption)
        adoption.add_done_callback(self._tasks.discard)

    def _publish_node(
        self,
        node: str,
        status: str,
        latency_ms: float | None,
        last_error: str | None,
        gpus: list[dict[str, Any]] | None,
    ) -> None:
        fields: dict[str, Any] = {"status": status, "latency_ms": latency_ms}
        fields["last_error"] = last_error
        if gpus is not None:
            fields["gpus"] = gpus
        self.bus.publish("node", node=node, **fields)

    def _publish_transition(
        self, worker: Worker, before: WorkerState | None, after: WorkerState, reason: str
    ) -> None:
        self.bus.publish(
            "worker",
            worker_id=worker.worker_id,
            node=worker.node_id,  # type: ignore[attr-defined]
            model_ref=worker.model_ref,
            from_state=before.value if before else None,
            state=after.value,
            reason=reason,
        )

    @classmethod
    def build(cls, config: QueenConfig) -> Services:
        config.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        db = open_database(config.db_path)
        pool = SessionPool(
            HostKeyStore(config.known_hosts_path),
            config.ssh_connect_timeout_s,
            PoolLimits(backoff_max_s=config.reconnect_max_s),
        )
        inventory = NodeInventory(pool)
        keys = KeyRing(config.home, config.token_file)
        keys.load()
        audit = AuditLog(config.audit_dir)
        workers = WorkerManager(config, pool, inventory)
        workers.audit = audit
        health = HealthMonitor(pool, config.health_interval_s, gpu_interval_s=config.gpu_interval_s)
        installer = Installer(pool, config.home)
        models = ModelManager(config, workers)
        return cls(
            config,
            db,
            pool,
            inventory,
            workers,
            keys,
            audit,
            health=health,
            installer=installer,
            models=models,
        )

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.supervisor.stop()
        await self.health.stop()
        if self.config.stop_workers_on_exit:
            counts = await self.workers.stop_all()
            log.info(
                "stopped workers: %d graceful, %d forced, %d failed",
                counts["graceful"],
                counts["forced"],
                counts["failed"],
            )
        await self.workers.aclose()
        await self.pool.close_all()
        for close in self._closers:
            close()
        self.db.close()


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc
