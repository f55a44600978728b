"""Prometheus metrics, derived from the event bus and the store.

Counters and histograms are fed by the bus (one listener sees every event), so
nothing in the hot path calls into metrics directly. Gauges that describe the
present (workers by state, node reachability) are read from the database at
scrape time, so they can never drift from `workers list`. Each queen has its
own registry: no process-global state.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from rbee_queen.eventbus import Event
from rbee_queen.store.tables import Node, Worker
from rbee_queen.workers.states import WorkerState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class _StoreCollector(Collector):
    """Gauges read from the database at scrape time."""

    def __init__(self, node_latency: dict[str, float], gpus: dict[str, list[dict[str, Any]]]):
        self._latency = node_latency
        self._gpus = gpus

    def collect(self) -> Iterator[GaugeMetricFamily]:
        by_state = GaugeMetricFamily("rbee_workers", "Workers by state", labels=["state"])
        counts = {state.value: 0 for state in WorkerState}
        for row in Worker.select(Worker.state):
            counts[row.state] = counts.get(row.state, 0) + 1
        for state, count in sorted(counts.items()):
            by_state.add_metric([state], count)
        yield by_state

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

        labels = ["node", "gpu", "name"]
        used = GaugeMetricFamily("rbee_gpu_memory_used_bytes", "GPU memory used", labels=labels)
        total = GaugeMetricFamily("rbee_gpu_memory_total_bytes", "GPU memory", labels=labels)
        temp = GaugeMetricFamily("rbee_gpu_temperature_celsius", "GPU temperature", labels=labels)
        for node_name, cards in self._gpus.items():
            for card in cards:
                key = [node_name, str(card.get("index")), str(card.get("name"))]
                if card.get("memory_used_mib") is not None:
                    used.add_metric(key, card["memory_used_mib"] * 1024 * 1024)
                if card.get("memory_total_mib") is not None:
                    total.add_metric(key, card["memory_total_mib"] * 1024 * 1024)
                if card.get("temperature_c") is not None:
                    temp.add_metric(key, card["temperature_c"])
        yield used
        yield total
        yield temp


class QueenMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._latency: dict[str, float] = {}
        self._gpus: dict[str, list[dict[str, Any]]] = {}
        self.registry.register(_StoreCollector(self._latency, self._gpus))
        r = self.registry
        self.requests = Counter(
            "rbee_requests", "Inference requests by outcome", ["outcome"], registry=r
        )
        self.in_flight = Gauge("rbee_requests_in_flight", "Requests streaming now", registry=r)
        self.queue_depth = Gauge(
            "rbee_queue_depth", "Requests waiting for a worker to start", registry=r
        )
        self.ttft = Histogram(
            "rbee_time_to_first_token_seconds",
            "Time from the request to its first token, at the queen",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "rbee_inter_token_latency_seconds",
            "Mean time between tokens of a request",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens_per_second = Histogram(
            "rbee_tokens_per_second",
            "Decode speed of finished requests",
            buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
            registry=r,
        )
        self.tokens = Counter("rbee_tokens_generated", "Tokens generated", registry=r)
        self.health_failures = Counter(
            "rbee_health_check_failures", "Failed health checks", ["kind"], registry=r
        )
        self.restarts = Counter("rbee_worker_restarts", "Worker restarts", registry=r)
        self.forced_kills = Counter("rbee_worker_forced_kills", "SIGKILLs sent", registry=r)
        self.graceful_stops = Counter(
            "rbee_worker_graceful_stops", "Workers that stopped on SIGTERM", registry=r
        )

    def observe(self, event: Event) -> None:
        """The bus listener: every event passes through here once."""
        kind = event["type"]
        if kind == "request_started":
            self.in_flight.inc()
        elif kind == "request_finished":
            self.in_flight.dec()
            self.requests.labels(event.get("outcome", "unknown")).inc()
            tokens = int(event.get("tokens_out") or 0)
            self.tokens.inc(tokens)
            if event.get("ttft_ms") is not None:
                self.ttft.observe(event["ttft_ms"] / 1000)
            decode_ms = event.get("decode_time_ms") or 0
            if tokens > 1 and decode_ms > 0:
                self.itl.observe(decode_ms / 1000 / (tokens - 1))
                self.tokens_per_second.observe(tokens / (decode_ms / 1000))
        elif kind == "node":
            if event.get("latency_ms") is not None:
                self._latency[event["node"]] = event["latency_ms"] / 1000
            if event.get("gpus") is not None:
                self._gpus[event["node"]] = event["gpus"]
            if event.get("status") == "unreachable":
                self.health_failures.labels("node").inc()
        elif kind == "health_failed":
            self.health_failures.labels("worker").inc()
        elif kind == "worker_killed":
            (self.forced_kills if event.get("forced") else self.graceful_stops).inc()
        elif kind == "worker_restarted":
            self.restarts.inc()
        elif kind == "queue":
            self.queue_depth.set(event.get("depth", 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
