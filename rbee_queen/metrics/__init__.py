"""Prometheus metrics, derived from the event bus and the store.

Counters and histograms are fed by the bus (one listener sees every event), so
nothing in the hot path calls into metrics directly; the one exception is the
HTTP timing in the queen's front (api/front.py), which hands each answer's
route, status and duration here. Gauges that describe the present (workers
by state, node reachability, GPU readings, free disk) are read at scrape time
(`store.py`), so they can never drift from `workers list`. Each queen has its own registry: no
process-global state. Every label value is bounded (`labels.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from rbee_queen.eventbus import Event
from rbee_queen.metrics.fleet import FleetMetrics, WorkerMetrics
from rbee_queen.metrics.requests import RequestMetrics
from rbee_queen.metrics.store import StoreCollector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class QueenMetrics:
    def __init__(self, volumes: Mapping[str, Path] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = RequestMetrics(self.registry)
        self.workers = WorkerMetrics(self.registry)
        self.fleet = FleetMetrics(self.registry, self.workers.health_failures)
        self.registry.register(StoreCollector(self.fleet, dict(volumes or {})))
        self._handlers: dict[str, Callable[[Event], None]] = {
            "request_started": self.requests.started,
            "request_finished": self.requests.finished,
            "request_queued": self.requests.queued,
            "request_dequeued": self.requests.dequeued,
            "worker": self.workers.changed,
            "worker_shutdown": self.workers.shutdown,
            "worker_killed": self.workers.killed,
            "worker_restarted": self.workers.restarted,
            "worker_oom": self.workers.oom,
            "scale_up": lambda _: self.workers.scale_ups.inc(),
            "health_failed": lambda _: self.workers.health_failures.labels("worker").inc(),
            "node": self.fleet.node,
            "health_round": self.fleet.round_done,
            "node_disk": self.fleet.disk,
            "ssh_connect": self.fleet.ssh_connect,
            "node_takeover": self.fleet.takeover,
            "model_download": self.fleet.download,
        }

    def observe(self, event: Event) -> None:
        """The bus listener: every event passes through here once."""
        handler = self._handlers.get(event["type"])
        if handler is not None:
            handler(event)

    def observe_http(
        self, route: str, method: str, status: int, code: str | None, took: float
    ) -> None:
        """One answer of the queen's HTTP API (api/timing.py, for the front)."""
        self.requests.http(route, method, status, code, took)

    def count_leases(self, held: Callable[[], Collection[str]]) -> None:
        """`rbee_node_leases_held` reads the nodes whose lease this queen holds
        at each scrape (nodes/lease.py), so it never lags a lapse or a takeover."""
        self.fleet.leases_held.set_function(lambda: len(held()))

    def render(self) -> bytes:
        return generate_latest(self.registry)
