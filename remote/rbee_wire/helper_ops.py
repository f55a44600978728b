"""The helper's JSON-lines RPC ops: each op's name, parameters and result, once.

The helper (`rbee_hive.rpc`) dispatches exactly the ops in `OPS` and checks
each request's argument names against them; the queen calls them through
`rbee_queen.fleet.helper_api.HelperApi`, whose methods are built to the same
parameters. Optional parameters are the keys of the `total=False` half of a
params TypedDict (the helper then uses its own default). Results are what the
helper's functions return, key for key; `tests/test_helper_ops_contract.py`
checks both sides and real answers against these definitions.

Nodes may run Python 3.10: no `NotRequired`, optional keys come from a
`total=False` subclass instead.
"""

from __future__ import annotations

from typing import Any, NamedTuple, TypedDict

from rbee_wire import codec

# --- shared shapes ------------------------------------------------------------------


class GpuCard(TypedDict):
    index: int
    name: str
    memory_total_mib: int | None
    memory_used_mib: int | None
    temperature_c: int | None
    utilization_pct: int | None


class _StoredFile(TypedDict):
    name: str  # relative to the model folder
    size: int


class StoredFile(_StoredFile, total=False):
    sha256: str  # present where the op hashed the files


class ExpectedFile(TypedDict):
    name: str
    size: int
    sha256: str


class HubFile(TypedDict):
    name: str
    size: int
    sha256: str | None  # None: the hub lists no hash for this file
    blob_id: str | None


class _InstallStep(TypedDict):
    step: str
    detail: str


class InstallStep(_InstallStep, total=False):
    seconds: float


class _WorkerStatus(TypedDict):
    known: bool
    alive: bool
    pid: int | None
    port: int | None  # where the worker listens, once it wrote its state file


class WorkerOomReport(TypedDict):  # from the memory group's kernel OOM counter
    oom_kills: int
    limit_bytes: int | None
    peak_bytes: int | None  # the group's high-water mark, where the kernel keeps one


class WorkerStatusResult(_WorkerStatus, total=False):
    started_at: float | None  # absent for a worker the node does not know
    oom: WorkerOomReport  # only for a dead worker whose memory group saw an OOM kill


class ListedWorker(WorkerStatusResult):
    worker_id: str


class ModelConfig(TypedDict, total=False):
    """The config.json fields the queen's VRAM estimate reads; each one only
    when it is a positive integer there."""

    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    hidden_size: int
    max_position_embeddings: int


# --- params and results, op by op ---------------------------------------------------


class PingParams(TypedDict):
    pass


class PingResult(TypedDict):
    pong: bool
    pid: int
    time: float
    cwd: str  # the helper's folder, install/hive/<digest>, as an absolute path


class ProbeParams(TypedDict, total=False):
    install_path: str


class ProbeResult(TypedDict):
    hostname: str
    python: str
    python_executable: str
    cpus: int
    ram_total_bytes: int | None
    ram_available_bytes: int | None
    disk_free_bytes: int
    gpus: list[GpuCard]
    gpu_source: str  # "nvml", "nvidia-smi" or "none"
    install_writable: bool
    disk_total_bytes: int
    backends: list[str]
    devices: dict[str, int]


class PathInfoParams(TypedDict):
    path: str


class PathInfoResult(TypedDict):
    path: str
    exists: bool
    is_dir: bool
    entries: list[str]


class _SpawnWorkerParams(TypedDict):
    worker_id: str
    run_dir: str
    argv: list[str]
    pythonpath: str


class SpawnWorkerParams(_SpawnWorkerParams, total=False):
    env: dict[str, str] | None
    memory_limit_bytes: int  # 0: no bound
    device: str  # a CUDA worker gets no address-space limit


class MemoryBound(TypedDict, total=False):
    kind: str  # cgroup_v2, cgroup_v1, rlimit_as, or none (always present)
    group: str
    limit_bytes: int
    reason: str  # why none


class _SpawnWorkerResult(TypedDict):
    pid: int
    already_running: bool
    log_file: str


class SpawnWorkerResult(_SpawnWorkerResult, total=False):
    memory_bound: MemoryBound  # absent when the worker was already running


class WorkerParams(TypedDict):
    worker_id: str
    run_dir: str


class StopWorkerParams(WorkerParams, total=False):
    grace_s: float


class StopWorkerResult(TypedDict):
    stopped: bool
    forced: bool
    was_running: bool


class ListWorkersParams(TypedDict):
    run_dir: str


class ListWorkersResult(TypedDict):
    workers: list[ListedWorker]


class LogTailParams(WorkerParams, total=False):
    lines: int


class LogTailResult(TypedDict):
    lines: list[str]


class InstallPathParams(TypedDict):
    install_path: str


class _InstallStatus(TypedDict):
    installed: bool
    venv: str


class InstallStatusResult(_InstallStatus, total=False):
    # Present when installed: the interpreter and what install_venv recorded.
    python: str
    key: str
    wheel: str
    base_python: str
    installed_at: float


class _InstallVenvParams(TypedDict):
    install_path: str
    wheel: str  # the wheel's path on the node
    key: str  # what was asked for; the same key again is a no-op


class InstallVenvParams(_InstallVenvParams, total=False):
    python: str
    system_site_packages: bool
    no_deps: bool
    extra: str
    index_url: str
    timeout_s: float


class InstallVenvResult(TypedDict):
    changed: bool
    python: str
    steps: list[InstallStep]


class ModelStoreResult(TypedDict):
    root: str
    free_bytes: int
    total_bytes: int


class ModelParams(TypedDict):
    install_path: str
    rel: str  # <provider>/<org>/<repo>[@rev] under the store root


class ModelScanParams(ModelParams, total=False):
    partial: bool
    hash_files: bool


class ModelScanResult(TypedDict):
    path: str
    exists: bool
    files: list[StoredFile]


class ModelPrepareResult(TypedDict):
    path: str
    files: list[StoredFile]


class ModelCommitParams(ModelParams):
    files: list[ExpectedFile]


class ModelCommitResult(TypedDict):
    path: str
    size_bytes: int


class ModelRemoveResult(TypedDict):
    removed: bool


class ModelSizeParams(TypedDict):
    path: str


class ModelSizeResult(TypedDict):
    path: str
    weights_bytes: int
    total_bytes: int
    config: ModelConfig


class _ModelFetchStartParams(ModelParams):
    python: str
    pythonpath: str
    repo_id: str
    commit: str
    files: list[HubFile]


class ModelFetchStartParams(_ModelFetchStartParams, total=False):
    token: str
    env: dict[str, str] | None  # only HF_* names reach the download


class ModelFetchStartResult(TypedDict):
    job: str
    path: str


class _ModelFetchEventsParams(TypedDict):
    job: str


class ModelFetchEventsParams(_ModelFetchEventsParams, total=False):
    cursor: int
    wait_s: float


class _ModelFetchEvents(TypedDict):
    # The download's own event lines, as `rbee_worker.hubfetch` wrote them.
    events: list[dict[str, Any]]
    cursor: int


class ModelFetchEventsResult(_ModelFetchEvents, total=False):
    # Present once the download has exited (the helper then forgets the job).
    finished: bool
    returncode: int | None
    stderr: list[str]


class ModelFetchCancelParams(TypedDict):
    job: str


class ModelFetchCancelResult(TypedDict):
    cancelled: bool


# --- the registry -------------------------------------------------------------------


class OpSpec(NamedTuple):
    name: str
    params: type  # a TypedDict class
    result: type  # a TypedDict class

    @property
    def required(self) -> frozenset[str]:
        return self.params.__required_keys__  # type: ignore[attr-defined,no-any-return]

    @property
    def optional(self) -> frozenset[str]:
        return self.params.__optional_keys__  # type: ignore[attr-defined,no-any-return]

    def bad_args(self, args: dict[str, Any]) -> str | None:
        """Why `args` do not fit this op's parameters, or None when they do."""
        unknown = sorted(set(args) - self.required - self.optional)
        missing = sorted(self.required - set(args))
        if unknown:
            return f"{self.name}: unexpected argument(s) {', '.join(unknown)}"
        if missing:
            return f"{self.name}: missing argument(s) {', '.join(missing)}"
        return None


OPS: dict[str, OpSpec] = {
    spec.name: spec
    for spec in (
        OpSpec("ping", PingParams, PingResult),
        OpSpec("probe", ProbeParams, ProbeResult),
        OpSpec("path_info", PathInfoParams, PathInfoResult),
        OpSpec("spawn_worker", SpawnWorkerParams, SpawnWorkerResult),
        OpSpec("worker_status", WorkerParams, WorkerStatusResult),
        OpSpec("stop_worker", StopWorkerParams, StopWorkerResult),
        OpSpec("list_workers", ListWorkersParams, ListWorkersResult),
        OpSpec("log_tail", LogTailParams, LogTailResult),
        OpSpec("install_status", InstallPathParams, InstallStatusResult),
        OpSpec("install_venv", InstallVenvParams, InstallVenvResult),
        OpSpec("model_store", InstallPathParams, ModelStoreResult),
        OpSpec("model_scan", ModelScanParams, ModelScanResult),
        OpSpec("model_prepare", ModelParams, ModelPrepareResult),
        OpSpec("model_commit", ModelCommitParams, ModelCommitResult),
        OpSpec("model_remove", ModelParams, ModelRemoveResult),
        OpSpec("model_size", ModelSizeParams, ModelSizeResult),
        OpSpec("model_fetch_start", ModelFetchStartParams, ModelFetchStartResult),
        OpSpec("model_fetch_events", ModelFetchEventsParams, ModelFetchEventsResult),
        OpSpec("model_fetch_cancel", ModelFetchCancelParams, ModelFetchCancelResult),
    )
}


# --- the frames ---------------------------------------------------------------------


def request_line(req_id: int, op: str, args: dict[str, Any]) -> str:
    """A request: `{"id": 1, "op": "probe", "args": {...}}` and a newline."""
    return codec.encode_line({"id": req_id, "op": op, "args": args})
