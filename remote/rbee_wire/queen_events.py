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
    """`cause`: the state that made the queen restart it (`failed`, `hung`)."""

    type: Literal["worker_restarted"]
    worker_id: str
    reason: str
    cause: NotRequired[str]


class WorkerOom(_Stamped):
    """The node's OOM killer ended a worker (its memory group's counter says so):
    `phase` loading or serving, the bound it ran under and its peak, in bytes."""

    type: Literal["worker_oom"]
    worker_id: str
    node: str
    model_ref: str
    phase: str
    limit_bytes: int | None
    peak_bytes: int | None
    next_limit_bytes: int


class WorkerShutdown(_Stamped):
    """A drain and stop ended: `outcome` graceful, forced or failed (an error code)."""

    type: Literal["worker_shutdown"]
    worker_id: str
    node: str
    reason: str
    outcome: str
    duration_s: float


class SshConnect(_Stamped):
    """One SSH connect to a node: `error` is the failure's code, null on success."""

    type: Literal["ssh_connect"]
    node: str
    error: str | None
    duration_s: float


class RequestQueued(_Stamped):
    """A request found every slot of its model busy and waits in the model's queue."""

    type: Literal["request_queued"]
    job_id: str
    model: str
    depth: int  # the model's queue, this request included


class RequestDequeued(_Stamped):
    """A request left its model's queue (or was refused a place: `full`).
    `outcome`: served, full, timeout, gone (the client left) or cancelled."""

    type: Literal["request_dequeued"]
    job_id: str
    model: str
    outcome: str
    waited_s: float
    depth: int  # the model's queue after it left


class ScaleUp(_Stamped):
    """Another worker of a model starts because its queue grew: on `node`, with
    `workers` of the model already running or starting and `depth` requests
    waiting; `reason` says which bound was passed (queue.scale_up_depth or
    queue.scale_up_after_s)."""

    type: Literal["scale_up"]
    model: str
    node: str
    workers: int
    depth: int
    reason: str


class NodeTakeover(_Stamped):
    """This queen took the lease of `nodes` (at its start, or from another queen
    on the same database whose lease lapsed) and re-adopted their workers:
    `adopted` serve again, `cleaned` were dead or unhealthy and stopped."""

    type: Literal["node_takeover"]
    queen: str
    nodes: list[str]
    adopted: int
    cleaned: int


class HealthRound(_Stamped):
    """One health round over every node ended."""

    type: Literal["health_round"]
    nodes: int
    failed: int
    duration_s: float


class NodeDisk(_Stamped):
    """A node's disk under its install path (where its models live), read with its GPUs."""

    type: Literal["node_disk"]
    node: str
    free_bytes: int
    total_bytes: int


class ModelDownload(_Stamped):
    """A model download or copy to a node ended (`error`: its code, null on success)."""

    type: Literal["model_download"]
    node: str
    model: str
    source: str
    error: str | None
    bytes: int
    duration_s: float


class Notice(_Stamped):
    """Something the user must know about the queen itself (`kind`: e.g.
    database_recovered, store_unavailable, audit_disk_low); `level`: warning or error."""

    type: Literal["notice"]
    kind: str
    level: str
    message: str


class ConfigReloaded(_Stamped):
    """A reload (SIGHUP or POST /v2/admin/reload) ended. `applied`: settings now
    in force; `restart_needed`: changed in the file but kept until a restart;
    `error`: why a file that failed validation changed nothing (null on success).
    Names of settings only, never a value."""

    type: Literal["config_reloaded"]
    ok: bool
    applied: list[str]
    restart_needed: list[str]
    error: str | None


class Snapshot(_Stamped):
    """The first event of every subscription: the fleet as it is."""

    type: Literal["snapshot"]
    nodes: list[dict[str, Any]]
    workers: list[dict[str, Any]]
    notices: list[dict[str, Any]]  # the queen's notices in force (`notice` events)


class Dropped(_Stamped):
    """The last event of a subscriber that fell behind."""

    type: Literal["dropped"]
    reason: str


QueenEvent = (
    WorkerChanged
    | NodeChanged
    | RequestStarted
    | RequestFinished
    | RequestQueued
    | RequestDequeued
    | ScaleUp
    | NodeTakeover
    | HealthFailed
    | WorkerKilled
    | WorkerRestarted
    | WorkerOom
    | WorkerShutdown
    | SshConnect
    | HealthRound
    | NodeDisk
    | ModelDownload
    | Notice
    | ConfigReloaded
    | Snapshot
    | Dropped
)
BY_TYPE: dict[str, Any] = {
    "worker": WorkerChanged,
    "node": NodeChanged,
    "request_started": RequestStarted,
    "request_finished": RequestFinished,
    "request_queued": RequestQueued,
    "request_dequeued": RequestDequeued,
    "scale_up": ScaleUp,
    "node_takeover": NodeTakeover,
    "health_failed": HealthFailed,
    "worker_killed": WorkerKilled,
    "worker_restarted": WorkerRestarted,
    "worker_oom": WorkerOom,
    "worker_shutdown": WorkerShutdown,
    "ssh_connect": SshConnect,
    "health_round": HealthRound,
    "node_disk": NodeDisk,
    "model_download": ModelDownload,
    "notice": Notice,
    "config_reloaded": ConfigReloaded,
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
