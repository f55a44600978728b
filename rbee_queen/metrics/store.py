"""Gauges of the present, read at scrape time: workers by state and node
reachability from the database (so they never drift from `workers list`), the
latest node readings the health loop published (latency, GPUs, disk), and the
queen's free disk."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from rbee_queen.store.tables import Node, Worker
from rbee_queen.workers.states import WorkerState

MIB = 1024 * 1024


class NodeReadings(Protocol):
    """The latest readings the health loop published, per node."""

    latency: dict[str, float]
    gpus: dict[str, list[dict[str, Any]]]
    disks: dict[str, tuple[int, int]]


GPU_LABELS = ["node", "gpu", "name"]


class StoreCollector(Collector):
    def __init__(self, readings: NodeReadings, volumes: Mapping[str, Path]) -> None:
        self._latency = readings.latency
        self._gpus = readings.gpus
        self._disks = readings.disks
        self._volumes = volumes

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield _workers_by_state()
        yield from self._nodes()
        yield from self._gpu_families()
        yield from self._queen_disks()

    def _nodes(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("rbee_node_up", "1 if the node is reachable", labels=["node"])
        latency = GaugeMetricFamily(
            "rbee_node_latency_seconds", "Last helper round trip", labels=["node"]
        )
        for node in Node.select(Node.name, Node.status):
            up.add_metric([node.name], 1.0 if node.status == "reachable" else 0.0)
            if node.name in self._latency:
                latency.add_metric([node.name], self._latency[node.name])
        yield up
        yield latency
        free = GaugeMetricFamily(
            "rbee_node_disk_free_bytes",
            "Free space under the node's install path (its models), at the last GPU reading",
            labels=["node"],
        )
        size = GaugeMetricFamily("rbee_node_disk_size_bytes", "Size of that disk", labels=["node"])
        for name, (free_bytes, total_bytes) in self._disks.items():
            free.add_metric([name], free_bytes)
            size.add_metric([name], total_bytes)
        yield free
        yield size

    def _gpu_families(self) -> Iterator[GaugeMetricFamily]:
        # (family, reading's key, factor to the metric's unit)
        readings = [
            (_gpu_gauge("rbee_gpu_memory_used_bytes", "GPU memory used"), "memory_used_mib", MIB),
            (_gpu_gauge("rbee_gpu_memory_total_bytes", "GPU memory"), "memory_total_mib", MIB),
            (_gpu_gauge("rbee_gpu_temperature_celsius", "GPU temperature"), "temperature_c", 1),
            (_gpu_gauge("rbee_gpu_utilization_ratio", "GPU load, 0 to 1"), "utilization_pct", 0.01),
        ]
        for node_name, cards in self._gpus.items():
            for card in cards:
                key = [node_name, str(card.get("index")), str(card.get("name"))]
                for family, field, factor in readings:
                    if isinstance(card.get(field), int | float):
                        family.add_metric(key, card[field] * factor)
        for family, _, _ in readings:
            yield family

    def _queen_disks(self) -> Iterator[GaugeMetricFamily]:
        free = GaugeMetricFamily(
            "rbee_queen_disk_free_bytes",
            "Free space on the queen's volumes (home: database and model cache; audit_log)",
            labels=["volume"],
        )
        size = GaugeMetricFamily(
            "rbee_queen_disk_size_bytes", "Size of the volume", labels=["volume"]
        )
        for name, path in self._volumes.items():
            try:
                usage = shutil.disk_usage(path)
            except OSError:  # not made yet: nothing to report
                continue
            free.add_metric([name], usage.free)
            size.add_metric([name], usage.total)
        yield free
        yield size


def _gpu_gauge(name: str, documentation: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=GPU_LABELS)


def _workers_by_state() -> GaugeMetricFamily:
    by_state = GaugeMetricFamily("rbee_workers", "Workers by state", labels=["state"])
    counts = {state.value: 0 for state in WorkerState}
    for row in Worker.select(Worker.state):
        counts[row.state] = counts.get(row.state, 0) + 1
    for state, count in sorted(counts.items()):
        by_state.add_metric([state], count)
    return by_state
