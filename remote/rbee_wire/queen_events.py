"""The queen's live events (`GET /v2/events`): one `snapshot`, then changes.

The event bus stamps every event with `seq` (1, 2, ... per queen process) and
`at` (Unix time); producers build the rest. The dashboard and the metrics read
these; nothing else crosses this boundary.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

from rbee_wire import typecheck


class _Stamped(TypedDict):
    seq: NotRequired[int]
    at: NotRequired[float]


class WorkerChanged(_Stamped):
    """A worker's state changed (`from_state` null for a new worker)."""

    type: Literal["worker"]
    worker_id: str
    node: str
    model_ref: str
    from_state: str | None
    state: str
    reason: str


class NodeChanged(_Stamped):
    """A node answered (or did not) a health round; `gpus` when read this round."""

    type: Literal["node"]
    node: str
    status: str
    latency_ms: float | None
    last_error: str | None
    gpus: NotRequired[list[dict[str, Any]]]


class RequestStarted(_Stamped):
    type: Literal["request_started"]
    job_id: str
    worker_id: str
    node: str
    model: str


class RequestFinished(_Stamped):
    """`outcome`: the worker's stop reason, or an error code."""

    type: Literal["request_finished"]
    job_id: str
    worker_id: str
    node: str
    outcome: str
    tokens_out: int
    ttft_ms: float | None
    decode_time_ms: int
    tokens_per_s: float | None


class HealthFailed(_Stamped):
    type: Literal["health_failed"]
    worker_id: str
    reason: str


class WorkerKilled(_Stamped):
    """A failed or hung worker's process group was killed (`forced`: SIGKILL)."""

    type: Literal["worker_killed"]
    worker_id: str
    forced: bool


class WorkerRestarted(_Stamped):
    type: Literal["worker_restarted"]
    worker_id: str
    reason: str


class Snapshot(_Stamped):
    """The first event of every subscription: the fleet as it is."""

    type: Literal["snapshot"]
    nodes: list[dict[str, Any]]
    workers: list[dict[str, Any]]


class Dropped(_Stamped):
    """The last event of a subscriber that fell behind."""

    type: Literal["dropped"]
    reason: str


QueenEvent = (
    WorkerChanged
    | NodeChanged
    | RequestStarted
    | RequestFinished
    | HealthFailed
    | WorkerKilled
    | WorkerRestarted
    | Snapshot
    | Dropped
)
BY_TYPE: dict[str, Any] = {
    "worker": WorkerChanged,
    "node": NodeChanged,
    "request_started": RequestStarted,
    "request_finished": RequestFinished,
    "health_failed": HealthFailed,
    "worker_killed": WorkerKilled,
    "worker_restarted": WorkerRestarted,
    "snapshot": Snapshot,
    "dropped": Dropped,
}


def problems(message: Any) -> list[str]:
    """What is wrong with a decoded event; empty when it is one of the above."""
    kind = message.get("type") if isinstance(message, dict) else None
    schema = BY_TYPE.get(str(kind))
    if schema is None:
        return [f"queen event: unknown type {kind!r}"]
    return typecheck.problems(message, schema)
