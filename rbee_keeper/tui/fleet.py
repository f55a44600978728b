"""The dashboard's picture of the fleet, built from the queen's event stream.

Pure data, no Textual: `apply()` takes one event and updates the picture, so
the same code serves the live app and the tests.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]
LIVE_STATES = frozenset({"spawning", "loading", "idle", "busy", "draining"})
RATE_WINDOW_S = 10.0
SPARK_POINTS = 40


@dataclass
class WorkerRow:
    """One live worker as the dashboard shows it: the queen's record of it, its
    requests in flight, and its recent speed."""

    data: Json
    in_flight: dict[str, Json] = field(default_factory=dict)  # job_id -> request_started
    rates: deque[float] = field(default_factory=lambda: deque(maxlen=SPARK_POINTS))
    last_ttft_ms: float | None = None
    requests_done: int = 0

    @property
    def worker_id(self) -> str:
        return str(self.data.get("worker_id"))


@dataclass
class Fleet:
    """Every node and live worker, and whether the link to the queen is up."""

    nodes: dict[str, Json] = field(default_factory=dict)
    workers: dict[str, WorkerRow] = field(default_factory=dict)
    finished: deque[tuple[float, int]] = field(default_factory=deque)  # (when, tokens)
    connected: bool = False
    last_error: str | None = None
    # What the queen says about itself (a restored database, refused writes), by kind.
    notices: dict[str, Json] = field(default_factory=dict)
    # Requests waiting for a slot, by served model (the depth its last queue event
    # gave); a new snapshot clears it, as the queen's snapshot carries no queues.
    queues: dict[str, int] = field(default_factory=dict)

    def apply(self, event: Json, now: float | None = None) -> None:
        kind = event.get("type")
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None:
            handler(event, time.time() if now is None else now)

    # --- event handlers ----------------------------------------------------------

    def _on_snapshot(self, event: Json, now: float) -> None:
        self.connected = True
        self.last_error = None
        self.nodes = {n["node_name"]: dict(n) for n in event.get("nodes", [])}
        self.workers = {w["worker_id"]: WorkerRow(dict(w)) for w in event.get("workers", [])}
        self.notices = {str(n["kind"]): dict(n) for n in event.get("notices", [])}
        self.queues = {}

    def _on_notice(self, event: Json, now: float) -> None:
        self.notices[str(event["kind"])] = dict(event)

    def _on_node(self, event: Json, now: float) -> None:
        node = self.nodes.setdefault(event["node"], {"node_name": event["node"]})
        for key in ("status", "latency_ms", "last_error", "gpus", "removed"):
            if key in event:
                node[key] = event[key]
        if event.get("removed"):
            self.nodes.pop(event["node"], None)

    def _on_worker(self, event: Json, now: float) -> None:
        worker_id = event["worker_id"]
        if event.get("state") not in LIVE_STATES:
            self.workers.pop(worker_id, None)
            return
        row = self.workers.setdefault(worker_id, WorkerRow({"worker_id": worker_id}))
        row.data.update(
            node=event.get("node"),
            model_ref=event.get("model_ref"),
            state=event.get("state"),
            last_reason=event.get("reason"),
        )

    def _on_request_queued(self, event: Json, now: float) -> None:
        self.queues[str(event.get("model"))] = int(event.get("depth") or 0)

    def _on_request_dequeued(self, event: Json, now: float) -> None:
        depth = int(event.get("depth") or 0)
        if depth > 0:
            self.queues[str(event.get("model"))] = depth
        else:
            self.queues.pop(str(event.get("model")), None)

    def _on_request_started(self, event: Json, now: float) -> None:
        row = self.workers.get(str(event.get("worker_id")))
        if row is not None:
            row.in_flight[str(event.get("job_id"))] = event

    def _on_request_finished(self, event: Json, now: float) -> None:
        tokens = int(event.get("tokens_out") or 0)
        self.finished.append((now, tokens))
        row = self.workers.get(str(event.get("worker_id")))
        if row is None:
            return
        row.in_flight.pop(str(event.get("job_id")), None)
        row.requests_done += 1
        if event.get("tokens_per_s") is not None:
            row.rates.append(float(event["tokens_per_s"]))
        if event.get("ttft_ms") is not None:
            row.last_ttft_ms = float(event["ttft_ms"])

    # --- what the screens show --------------------------------------------------

    def tokens_per_second(self, now: float | None = None) -> float:
        now = time.time() if now is None else now
        while self.finished and now - self.finished[0][0] > RATE_WINDOW_S:
            self.finished.popleft()
        return sum(tokens for _, tokens in self.finished) / RATE_WINDOW_S

    @property
    def requests_in_flight(self) -> int:
        return sum(len(w.in_flight) for w in self.workers.values())

    @property
    def queued(self) -> int:
        return sum(self.queues.values())

    def workers_on(self, node: str) -> list[WorkerRow]:
        return sorted(
            (w for w in self.workers.values() if w.data.get("node") == node),
            key=lambda w: w.worker_id,
        )
