"""Figures of requests: the queen's HTTP routes (timed by its front) and
inference streams (from `request_started` and `request_finished`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from rbee_queen.eventbus import Event
from rbee_queen.metrics import labels

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
DURATION_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
RATE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
QUEUE_OUTCOMES = frozenset({"served", "full", "timeout", "gone", "cancelled"})


class RequestMetrics:
    def __init__(self, r: CollectorRegistry) -> None:
        self.http_duration = Histogram(
            "rbee_http_request_duration_seconds",
            "Queen HTTP requests, until the answer's last byte (streams included)",
            ["route", "method", "status"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "rbee_errors",
            "Errors by code: `api` answers with an error status, `stream` ends mid-stream",
            ["code", "source"],
            registry=r,
        )
        self.requests = Counter(
            "rbee_requests", "Inference requests by outcome", ["outcome"], registry=r
        )
        self.in_flight = Gauge("rbee_requests_in_flight", "Requests streaming now", registry=r)
        self.queue_depth = Gauge(
            "rbee_queue_depth", "Requests waiting in the models' queues for a slot", registry=r
        )
        self.queue_wait = Histogram(
            "rbee_queue_wait_seconds",
            "Time requests spent in their model's queue, by how they left it",
            ["model", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self._model_families(r)
        self._open: dict[str, tuple[str, float]] = {}  # job id -> (model, started at)

    def _model_families(self, r: CollectorRegistry) -> None:
        """The inference figures, by model."""
        self.duration = Histogram(
            "rbee_inference_duration_seconds",
            "Inference requests from their worker's claim to their end, by model",
            ["model"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.model_errors = Counter(
            "rbee_inference_errors",
            "Inference requests ended by an error",
            ["model", "code"],
            registry=r,
        )
        self.ttft = Histogram(
            "rbee_time_to_first_token_seconds",
            "Time from the request to its first token, at the queen",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "rbee_inter_token_latency_seconds",
            "Mean time between tokens of a request",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens_per_second = Histogram(
            "rbee_tokens_per_second",
            "Decode speed of finished requests",
            ["model"],
            buckets=RATE_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("rbee_tokens_generated", "Tokens generated", registry=r)

    def http(self, route: str, method: str, status: int, code: str | None, took: float) -> None:
        self.http_duration.labels(route, method, labels.status_class(status)).observe(took)
        if status >= 400:
            self.errors.labels(labels.api_error_code(code), "api").inc()

    def queued(self, event: Event) -> None:
        self.queue_depth.inc()

    def dequeued(self, event: Event) -> None:
        outcome = str(event["outcome"])
        if outcome != "full":  # refused a place: it never counted in the depth
            self.queue_depth.dec()
        outcome = outcome if outcome in QUEUE_OUTCOMES else labels.OTHER
        self.queue_wait.labels(str(event["model"]), outcome).observe(float(event["waited_s"]))

    def started(self, event: Event) -> None:
        self.in_flight.inc()
        self._open[event["job_id"]] = (str(event["model"]), float(event["at"]))

    def finished(self, event: Event) -> None:
        self.in_flight.dec()
        model, started_at = self._open.pop(event["job_id"], ("unknown", event["at"]))
        outcome = labels.outcome(event.get("outcome"))
        self.requests.labels(outcome).inc()
        self.duration.labels(model).observe(max(0.0, event["at"] - started_at))
        if labels.is_error(outcome):
            self.errors.labels(outcome, "stream").inc()
            self.model_errors.labels(model, outcome).inc()
        tokens = int(event.get("tokens_out") or 0)
        self.tokens.inc(tokens)
        if event.get("ttft_ms") is not None:
            self.ttft.labels(model).observe(event["ttft_ms"] / 1000)
        decode_s = (event.get("decode_time_ms") or 0) / 1000
        if tokens > 1 and decode_s > 0:
            self.itl.labels(model).observe(decode_s / (tokens - 1))
            self.tokens_per_second.labels(model).observe(tokens / decode_s)
