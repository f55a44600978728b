"""The queen's long-lived parts, built once in the lifespan and shared by routes.

This is the composition root: events, audit and the worker core's
collaborators are wired here, by constructor, and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from peewee import Database, DatabaseError
from starlette.requests import Request

from rbee_queen import deferred
from rbee_queen.audit import AuditLog
from rbee_queen.audit_disk import AuditDiskSettings, AuditDiskWatch
from rbee_queen.audit_trail import AuditTrail
from rbee_queen.config import QueenConfig
from rbee_queen.eventbus import EventBus
from rbee_queen.fleet.known_hosts import HostKeyStore
from rbee_queen.fleet.pool import PoolLimits, SessionPool
from rbee_queen.keys import KeyRing
from rbee_queen.metrics import QueenMetrics
from rbee_queen.models.catalog import ModelCatalog
from rbee_queen.models.node_models import local_path_for_worker
from rbee_queen.models.operations import ModelManager
from rbee_queen.nodes.health import HealthMonitor
from rbee_queen.nodes.install import Installer
from rbee_queen.nodes.inventory import NodeInventory
from rbee_queen.nodes.lease import LeaseSettings, NodeLeases, default_queen_id
from rbee_queen.store.backup import BackupKeeper, BackupSettings
from rbee_queen.store.db import open_store
from rbee_queen.store.notices import Notices
from rbee_queen.store.retention import HistoryRetention, RetentionSettings
from rbee_queen.store.tables import Worker
from rbee_queen.validation import model_path
from rbee_queen.workers.core import WorkerCore
from rbee_queen.workers.routing import Router
from rbee_queen.workers.states import WorkerState
from rbee_queen.workers.supervisor import Supervisor, SupervisorSettings
from rbee_wire.queen_events import NodeChanged, NodeTakeover, QueenEvent, WorkerChanged

log = logging.getLogger("rbee.queen")


@dataclass
class Services:
    config: QueenConfig
    db: Database
    pool: SessionPool
    inventory: NodeInventory
    workers: WorkerCore
    router: Router
    supervisor: Supervisor
    keys: KeyRing
    audit: AuditLog
    bus: EventBus
    metrics: QueenMetrics
    catalog: ModelCatalog
    health: HealthMonitor = field(kw_only=True)
    installer: Installer = field(kw_only=True)
    models: ModelManager = field(kw_only=True)
    backups: BackupKeeper = field(kw_only=True)
    notices: Notices = field(kw_only=True)
    audit_disk: AuditDiskWatch = field(kw_only=True)
    leases: NodeLeases = field(kw_only=True)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    async def start_background(self) -> None:
        """Loops that run for the queen's life, and re-adoption of the workers a
        previous queen left running (in the background: a node that does not
        answer must not hold up the start)."""
        # The nodes whose lease this queen holds first: only those are driven
        # from here, and their workers re-adopted (on_gained, per takeover).
        await self.leases.start()
        self.health.start()
        self.supervisor.start()
        self.backups.start()
        self.audit_disk.start()
        adoption = asyncio.create_task(self._first_takeover(), name="re-adoption")
        self._tasks.add(adoption)
        adoption.add_done_callback(self._tasks.discard)

    async def _first_takeover(self) -> None:
        try:
            await self.leases.first_takeover()
        finally:
            self.workers.registry.adoption_done.set()

    @classmethod
    def build(cls, config: QueenConfig) -> Services:
        config.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        db, recovery = open_store(
            config.store_location, config.db_busy_timeout_ms, config.db_password_file
        )  # a damaged SQLite file set aside, a backup restored
        pool = session_pool(config)
        inventory = NodeInventory(pool)
        keys = KeyRing(config.home, config.token_file)
        keys.load()
        audit = AuditLog(config.audit_dir, int(config.audit_max_file_mb * 1024 * 1024))
        # Every change is published once; metrics and the audit trail listen.
        bus = EventBus(check_messages=config.check_messages)
        metrics = QueenMetrics({"home": config.home, "audit_log": config.audit_dir})
        bus.add_listener(metrics.observe)
        pool.publish = bus.publish
        bus.add_listener(AuditTrail(audit).observe)
        notices = Notices(bus.publish, audit)
        if recovery is not None:
            notices.recovered(recovery)
        leases = node_leases(config)
        metrics.count_leases(leases.held)
        workers = WorkerCore.build(
            config,
            inventory,
            publish=bus.publish,
            publish_built=bus.publish_built,
            on_transition=lambda w, before, after, reason: bus.publish(
                worker_changed(w, before, after, reason)
            ),
            audit=audit,
            model_dir=worker_model_dir,
            check_messages=config.check_messages,
            leases=leases,
        )
        health = health_monitor(config, pool, bus.publish)
        wire_leases(leases, workers, health, bus.publish)
        models = ModelManager(config, inventory)
        models.publish = bus.publish
        return cls(
            config,
            db,
            pool,
            inventory,
            workers,
            Router.build(workers.registry, workers.starter, bus.publish, config, leases),
            supervisor_for(config, workers, leases),
            keys,
            audit,
            bus,
            metrics,
            ModelCatalog(),
            health=health,
            installer=Installer(pool, config.home),
            models=models,
            backups=backup_keeper(config),
            notices=notices,
            audit_disk=audit_disk_watch(config, notices, metrics),
            leases=leases,
        )

    def reconfigure(self, config: QueenConfig) -> None:
        """A reload's settings: each part takes its own without a restart, so no
        stream or worker is dropped (config_reload.py decides which settings)."""
        self.config = config
        logging.getLogger().setLevel(config.log_level.upper())
        self.health.reconfigure(config.health_interval_s, config.gpu_interval_s)
        self.supervisor.reconfigure(supervisor_settings(config))
        self.workers.reconfigure(config)
        self.router.reconfigure(config)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.supervisor.stop()
        await self.health.stop()
        await self.router.scaling.aclose()  # before the workers are stopped
        if self.config.stop_workers_on_exit:
            counts = await self.workers.stopper.stop_all()
            log.info(
                "stopped workers: %d graceful, %d forced, %d failed",
                counts["graceful"],
                counts["forced"],
                counts["failed"],
            )
        await self.leases.stop()  # renewed until the workers were stopped
        with contextlib.suppress(DatabaseError):  # else they lapse after the ttl
            self.leases.release()  # another queen may take the nodes at once
        await self.workers.aclose()
        await self.pool.close_all()
        self.audit_disk.stop()
        await self.backups.stop()  # the shutdown backup
        deferred.flush()  # the last audit entries and events, while the store is open
        self.db.close()


def worker_model_dir(node_name: str, model_ref: str) -> str | None:
    """The folder on the node a worker loads: a `file:` path as given, an
    `hf:` reference through the node's model catalog (never a download)."""
    return model_path(model_ref) or local_path_for_worker(node_name, model_ref)


def wire_leases(
    leases: NodeLeases,
    workers: WorkerCore,
    health: HealthMonitor,
    publish: Callable[[QueenEvent], object],
) -> None:
    """A node taken re-adopts its workers, a node lost lets them go; the health
    loop checks only the nodes this queen holds."""
    leases.on_gained = takeover(workers, leases.queen_id, publish)
    leases.on_lost = workers.adoption.let_go
    health.owns = leases.holds


def takeover(
    workers: WorkerCore, queen_id: str, publish: Callable[[QueenEvent], object]
) -> Callable[[set[str]], Awaitable[None]]:
    """What a queen does with nodes whose lease it just took: re-adopt their
    workers, then say so (`node_takeover`)."""

    async def take_over(nodes: set[str]) -> None:
        counts = await workers.adoption.adopt_all(nodes)
        publish(
            NodeTakeover(
                type="node_takeover",
                queen=queen_id,
                nodes=sorted(nodes),
                adopted=counts.get("adopted", 0),
                cleaned=counts.get("cleaned", 0),
            )
        )

    return take_over


def node_leases(config: QueenConfig) -> NodeLeases:
    queen_id = config.queen_id or default_queen_id(config.home)
    return NodeLeases(LeaseSettings(queen_id, config.lease_ttl_s, config.lease_renew_s))


def supervisor_for(config: QueenConfig, workers: WorkerCore, leases: NodeLeases) -> Supervisor:
    settings = supervisor_settings(config)
    supervisor = Supervisor(
        workers.registry, workers.access, workers.recovery, workers.stopper, settings
    )
    supervisor.owns = leases.drives  # a node whose lease lapsed is another queen's to recover
    return supervisor


def supervisor_settings(config: QueenConfig) -> SupervisorSettings:
    return SupervisorSettings(
        interval_s=config.supervisor_interval_s,
        health_timeout_s=config.worker_health_timeout_s,
        hung_after_s=config.hung_after_s,
        idle_stop_s=config.idle_stop_s or float("inf"),
    )


def worker_changed(
    worker: Worker, before: WorkerState | None, after: WorkerState, reason: str
) -> WorkerChanged:
    return WorkerChanged(
        type="worker",
        worker_id=worker.worker_id,
        node=worker.node_id,  # type: ignore[attr-defined]
        model_ref=worker.model_ref,
        from_state=before.value if before else None,
        state=after.value,
        reason=reason,
    )


def node_changed(
    node: str,
    status: str,
    latency_ms: float | None,
    last_error: str | None,
    gpus: list[dict[str, Any]] | None,
) -> NodeChanged:
    event = NodeChanged(
        type="node", node=node, status=status, latency_ms=latency_ms, last_error=last_error
    )
    if gpus is not None:
        event["gpus"] = gpus
    return event


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def session_pool(config: QueenConfig) -> SessionPool:
    """The SSH sessions to the nodes, with the connect bound and backoff of the settings."""
    return SessionPool(
        HostKeyStore(config.known_hosts_path),
        config.ssh_connect_timeout_s,
        PoolLimits(connects=config.ssh_connect_concurrency, backoff_max_s=config.reconnect_max_s),
    )


def backup_keeper(config: QueenConfig) -> BackupKeeper:
    """The store's periodic work: backups (SQLite), the WAL's checkpoint, the history's prune."""
    return BackupKeeper(
        config.db_path,
        BackupSettings(config.db_backups, config.db_backup_interval_s),
        HistoryRetention(
            RetentionSettings(config.db_history_keep_s, config.db_stopped_workers_keep_s)
        ),
    )


def health_monitor(
    config: QueenConfig, pool: SessionPool, publish: Callable[[QueenEvent], object]
) -> HealthMonitor:
    """The health loop, publishing each node's change as a node_changed event."""
    health = HealthMonitor(pool, config.health_interval_s, gpu_interval_s=config.gpu_interval_s)
    health.listener = lambda node, status, latency_ms, last_error, gpus: publish(
        node_changed(node, status, latency_ms, last_error, gpus)
    )
    health.publish = publish
    return health


def audit_disk_watch(
    config: QueenConfig, notices: Notices, metrics: QueenMetrics
) -> AuditDiskWatch:
    """The audit folder's free space, watched: a notice and a metric when it runs low."""
    return AuditDiskWatch(
        config.audit_dir,
        notices,
        metrics.registry,
        AuditDiskSettings(int(config.audit_min_free_mb * 2**20), config.audit_disk_check_s),
    )
