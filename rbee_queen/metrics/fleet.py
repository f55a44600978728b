"""Figures of the fleet: workers' lives (starts, stops, restarts, kills, health),
the health loop, SSH connects and model downloads, each from its event."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from rbee_queen.eventbus import Event
from rbee_queen.metrics import labels

SHORT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
STOP_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
DOWNLOAD_BUCKETS = (1, 5, 15, 60, 300, 900, 1800, 3600, 7200)
START_FAILED_FROM = frozenset({"spawning", "loading"})
OOM_PHASES = ("starting", "loading", "serving")  # WorkerOom.phase
SOURCES = ("queen", "hub", "copy")  # where a model's bytes come from (ModelDownload.source)


class WorkerMetrics:
    def __init__(self, r: CollectorRegistry) -> None:
        self.starts = Counter(
            "rbee_worker_starts",
            "Worker processes started: `new` or `restart`",
            ["reason"],
            registry=r,
        )
        self.start_failures = Counter(
            "rbee_worker_start_failures",
            "Workers that failed before their model loaded",
            registry=r,
        )
        self.stops = Counter(
            "rbee_worker_stops",
            "Workers drained and stopped: `idle` or `requested`",
            ["reason"],
            registry=r,
        )
        self.shutdown_duration = Histogram(
            "rbee_worker_shutdown_duration_seconds",
            "Drain and stop of a worker, by outcome (graceful, forced, or an error code)",
            ["outcome"],
            buckets=STOP_BUCKETS,
            registry=r,
        )
        self.restarts = Counter(
            "rbee_worker_restarts", "Worker restarts, by what caused them", ["cause"], registry=r
        )
        self.circuit_opens = Counter(
            "rbee_worker_circuit_opens", "A model's circuit opened on a node", registry=r
        )
        self.health_failures = Counter(
            "rbee_health_check_failures", "Failed health checks", ["kind"], registry=r
        )
        self.forced_kills = Counter("rbee_worker_forced_kills", "SIGKILLs sent", registry=r)
        self.scale_ups = Counter(
            "rbee_worker_scale_ups", "Workers started because a model's queue grew", registry=r
        )
        self.ooms = Counter(
            "rbee_worker_ooms",
            "Workers the node's OOM killer ended, by phase (loading or serving)",
            ["phase"],
            registry=r,
        )
        self.graceful_stops = Counter(
            "rbee_worker_graceful_stops", "Failed workers that stopped on SIGTERM", registry=r
        )
        self._zero_known_labels()

    def _zero_known_labels(self) -> None:
        """The known label values start at zero, so a rate or an alert has a series
        to read before the first such event."""
        for reason in ("new", "restart"):
            self.starts.labels(reason)
        for reason in ("idle", "requested"):
            self.stops.labels(reason)
        for outcome in ("graceful", "forced"):
            self.shutdown_duration.labels(outcome)
        for cause in ("failed", "hung", "oom"):
            self.restarts.labels(cause)
        for phase in OOM_PHASES:
            self.ooms.labels(phase)
        for kind in ("node", "worker"):
            self.health_failures.labels(kind)

    def changed(self, event: Event) -> None:
        before, state = event.get("from_state"), event.get("state")
        if before is None:
            self.starts.labels("new").inc()
        elif state == "spawning" and before == "restarting":
            self.starts.labels("restart").inc()
        if state == "failed" and before in START_FAILED_FROM:
            self.start_failures.inc()
        if labels.circuit_opened(state, event.get("reason")):
            self.circuit_opens.inc()

    def shutdown(self, event: Event) -> None:
        outcome = event["outcome"]
        if outcome not in ("graceful", "forced"):
            outcome = labels.error_code(outcome)
        self.stops.labels(labels.stop_reason(str(event["reason"]))).inc()
        self.shutdown_duration.labels(outcome).observe(event["duration_s"])

    def killed(self, event: Event) -> None:
        (self.forced_kills if event.get("forced") else self.graceful_stops).inc()

    def restarted(self, event: Event) -> None:
        cause = event.get("cause")
        self.restarts.labels(cause if cause in ("failed", "hung", "oom") else "other").inc()

    def oom(self, event: Event) -> None:
        phase = event.get("phase")
        self.ooms.labels(phase if phase in OOM_PHASES else "other").inc()


class FleetMetrics:
    def __init__(self, r: CollectorRegistry, health_failures: Counter) -> None:
        self.latency: dict[str, float] = {}
        self.gpus: dict[str, list[dict[str, Any]]] = {}
        self.disks: dict[str, tuple[int, int]] = {}  # node -> (free, total) bytes
        self.health_failures = health_failures
        self.health_round = Histogram(
            "rbee_health_round_duration_seconds",
            "One health round over every node",
            buckets=SHORT_BUCKETS,
            registry=r,
        )
        self.ssh_connects = Counter(
            "rbee_ssh_connects", "SSH connects tried, per node", ["node"], registry=r
        )
        self.ssh_failures = Counter(
            "rbee_ssh_connect_failures",
            "SSH connects that failed, per node and code",
            ["node", "code"],
            registry=r,
        )
        self.ssh_duration = Histogram(
            "rbee_ssh_connect_duration_seconds",
            "SSH connect and helper start",
            buckets=SHORT_BUCKETS,
            registry=r,
        )
        self.downloads = Counter(
            "rbee_model_downloads",
            "Model downloads and copies, by source and outcome",
            ["source", "outcome"],
            registry=r,
        )
        self.download_bytes = Counter(
            "rbee_model_download_bytes",
            "Bytes moved by model downloads and copies",
            ["source"],
            registry=r,
        )
        self.download_duration = Histogram(
            "rbee_model_download_duration_seconds",
            "Model downloads and copies",
            ["source"],
            buckets=DOWNLOAD_BUCKETS,
            registry=r,
        )
        self.takeovers = Counter(
            "rbee_node_takeovers",
            "Nodes whose lease this queen took: at its start, when a node is added, "
            "or from a queen on the same database that stopped renewing",
            registry=r,
        )
        # Read at scrape time from the leases (QueenMetrics.count_leases).
        self.leases_held = Gauge(
            "rbee_node_leases_held", "Nodes whose lease this queen holds now", registry=r
        )

        for source in SOURCES:
            self.downloads.labels(source, "ok")
            self.download_bytes.labels(source)
            self.download_duration.labels(source)

    def node(self, event: Event) -> None:
        if event.get("latency_ms") is not None:
            self.latency[event["node"]] = event["latency_ms"] / 1000
        if event.get("gpus") is not None:
            self.gpus[event["node"]] = event["gpus"]
        if event.get("status") == "unreachable":
            self.health_failures.labels("node").inc()

    def disk(self, event: Event) -> None:
        self.disks[event["node"]] = (int(event["free_bytes"]), int(event["total_bytes"]))

    def round_done(self, event: Event) -> None:
        self.health_round.observe(event["duration_s"])

    def takeover(self, event: Event) -> None:
        self.takeovers.inc(len(event["nodes"]))  # one per node taken

    def ssh_connect(self, event: Event) -> None:
        self.ssh_connects.labels(event["node"]).inc()
        self.ssh_duration.observe(event["duration_s"])
        if event.get("error") is not None:
            self.ssh_failures.labels(event["node"], labels.error_code(event["error"])).inc()

    def download(self, event: Event) -> None:
        source = event["source"] if event["source"] in SOURCES else "other"
        error = event.get("error")
        outcome = "ok" if error is None else labels.error_code(error)
        self.downloads.labels(source, outcome).inc()
        self.download_bytes.labels(source).inc(event["bytes"])
        self.download_duration.labels(source).observe(event["duration_s"])
