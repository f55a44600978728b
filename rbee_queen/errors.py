"""One exception tree for the queen, its API and the keeper.

Every error carries a reason code (UPPER_SNAKE_CASE, the original rbee's codes
where one exists) and an HTTP status. The API renders any `RbeeError` as the
error envelope; the keeper turns that envelope back into the same class, so
server and CLI share one vocabulary. Lower-layer exceptions (asyncssh, OSError,
httpx) are translated into this tree at exactly one boundary each.
"""

from __future__ import annotations

from typing import Any, ClassVar


class RbeeError(Exception):
    code: ClassVar[str] = "INTERNAL_ERROR"
    status: ClassVar[int] = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def envelope(self, correlation_id: str = "") -> dict[str, Any]:
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "details": self.details,
                "correlation_id": correlation_id,
            }
        }


# --- the request itself is wrong (4xx) ---------------------------------------


class InvalidRequest(RbeeError):
    code = "INVALID_REQUEST"
    status = 400


class NotFound(RbeeError):
    code = "NOT_FOUND"
    status = 404


class NodeNotFound(NotFound):
    code = "NODE_NOT_FOUND"


class ModelNotFound(NotFound):
    code = "MODEL_NOT_FOUND"


class WorkerNotFound(NotFound):
    code = "WORKER_NOT_FOUND"


class Conflict(RbeeError):
    status = 409
    code = "CONFLICT"


class NodeAlreadyExists(Conflict):
    code = "NODE_ALREADY_EXISTS"


class ModelAlreadyExists(Conflict):
    code = "MODEL_ALREADY_EXISTS"


class ConfigRejected(InvalidRequest):
    """A reload read settings that fail validation: nothing changed."""

    code = "CONFIG_INVALID"


class SshKeyNotFound(InvalidRequest):
    code = "SSH_KEY_NOT_FOUND"


class PayloadTooLarge(RbeeError):
    code = "PAYLOAD_TOO_LARGE"
    status = 413


# --- who is asking (401/403) ---------------------------------------------------


class Unauthorized(RbeeError):
    """No valid bearer token: answered with `WWW-Authenticate: Bearer`."""

    code = "UNAUTHORIZED"
    status = 401


class MissingApiKey(Unauthorized):
    code = "MISSING_API_KEY"


class InvalidApiKey(Unauthorized):
    code = "INVALID_API_KEY"


class Forbidden(RbeeError):
    code = "FORBIDDEN"
    status = 403


class ModelNotAllowed(Forbidden):
    code = "MODEL_NOT_ALLOWED"


class KeyNotFound(NotFound):
    code = "KEY_NOT_FOUND"


class KeyAlreadyExists(Conflict):
    code = "KEY_ALREADY_EXISTS"


# --- local configuration ---------------------------------------------------------


class SecretInvalid(RbeeError):
    """A secret file or credential that must not be used (mode, size, content)."""

    code = "SECRET_INVALID"
    status = 500


class InsecureBind(RbeeError):
    code = "INSECURE_BIND"
    status = 500


class AuditChainBroken(RbeeError):
    code = "AUDIT_CHAIN_BROKEN"
    status = 500


# --- a node could not be reached or trusted (502/504) ------------------------


class NodeError(RbeeError):
    status = 502
    code = "NODE_ERROR"


class NodeUnreachable(NodeError):
    code = "NODE_UNREACHABLE"


class ConnectionTimeout(NodeError):
    code = "CONNECTION_TIMEOUT"
    status = 504


class NodeHeldElsewhere(NodeError):
    """Another queen on the same database holds the node's lease: it alone
    starts, stops and supervises the node's workers (nodes/lease.py)."""

    code = "NODE_HELD_ELSEWHERE"
    status = 503


class SshAuthFailed(NodeError):
    code = "SSH_AUTH_FAILED"


class SshKeyInsecure(NodeError):
    """A private key file others can read: refused, as OpenSSH does."""

    code = "SSH_KEY_INSECURE"
    status = 400


class HostKeyUnknown(NodeError):
    code = "HOST_KEY_UNKNOWN"


class HostKeyChanged(NodeError):
    code = "HOST_KEY_CHANGED"


class HelperFailed(NodeError):
    code = "HELPER_FAILED"


class PreflightFailed(NodeError):
    """The node answers but cannot run rbee (python, install path, disk)."""

    code = "PREFLIGHT_FAILED"


class InstallFailed(NodeError):
    """`setup install` could not build the node's venv; the node is left as it was."""

    code = "INSTALL_FAILED"


class DependenciesMissing(InstallFailed):
    """The new venv cannot import the worker's packages (--no-deps on a bare python)."""

    code = "DEPENDENCIES_MISSING"
    status = 400


class InstallInProgress(Conflict):
    code = "INSTALL_IN_PROGRESS"


# --- workers and inference ---------------------------------------------------


class WorkerError(RbeeError):
    status = 502
    code = "WORKER_ERROR"


class BackendUnavailable(WorkerError):
    code = "BACKEND_UNAVAILABLE"


class LoadingTimeout(WorkerError):
    code = "LOADING_TIMEOUT"
    status = 504


class WorkerStartFailed(WorkerError):
    code = "WORKER_START_FAILED"


class AllSlotsBusy(WorkerError):
    code = "ALL_SLOTS_BUSY"
    status = 503


class WorkerDraining(WorkerError):  # the only worker that could serve it is shutting down
    code = "WORKER_DRAINING"
    status = 503


class InferenceFailed(WorkerError):
    code = "INFERENCE_FAILED"


class WorkerOom(WorkerError):  # the node's OOM killer ended it (its memory group's counter)
    code = "WORKER_OOM"


class VramOom(WorkerError):  # the GPU ran out of memory for one request or a load
    code = "VRAM_OOM"


# --- models on nodes -----------------------------------------------------------


class ModelInUse(Conflict):
    code = "MODEL_IN_USE"


class DownloadInProgress(Conflict):
    code = "DOWNLOAD_IN_PROGRESS"


class HubTokenRequired(RbeeError):
    """The hub refused the repository without (or with this) token: gated or private."""

    code = "HF_TOKEN_REQUIRED"
    status = 403


class DownloadFailed(RbeeError):
    code = "DOWNLOAD_FAILED"
    status = 502


class InsufficientResources(RbeeError):
    """The node has too little of something; details carry required and available bytes."""

    code = "INSUFFICIENT_RESOURCES"
    status = 507


class InsufficientRam(InsufficientResources):
    code = "INSUFFICIENT_RAM"


class InsufficientVram(InsufficientResources):
    code = "INSUFFICIENT_VRAM"


class InsufficientDisk(InsufficientResources):
    code = "INSUFFICIENT_DISK"


class GpuTooHot(RbeeError):
    """The chosen GPU is above the temperature limit; details name both."""

    code = "GPU_TOO_HOT"
    status = 503


class RequestTimeout(RbeeError):
    code = "REQUEST_TIMEOUT"
    status = 504


class QueueFull(RbeeError):
    """Every slot for the model is busy and its queue is at its length limit;
    answered with `Retry-After`, which the OpenAI clients honour by themselves."""

    code = "QUEUE_FULL"
    status = 429
    retry_after_s: ClassVar[int] = 1


class QueueTimeout(QueueFull):
    """The request waited in its model's queue for the longest wait allowed."""

    code = "QUEUE_TIMEOUT"


class ClientGone(RbeeError):
    """The client closed its connection while its request waited for a slot."""

    code = "CLIENT_GONE"
    status = 499


class StoreUnavailable(RbeeError):
    """The queen's database refuses writes (disk full, read-only, locked past the
    busy timeout); answered with `Retry-After`, and the next write tries again."""

    code = "STORE_UNAVAILABLE"
    status = 503
    retry_after_s: ClassVar[int] = 5


class DownloadTimeout(DownloadFailed):
    """No byte moved for the stall limit; the partial file stays for the resume."""

    code = "DOWNLOAD_TIMEOUT"
    status = 504


class QueenUnavailable(RbeeError):
    """Raised by the keeper only: no queen answers and none could be started."""

    code = "QUEEN_UNAVAILABLE"
    status = 503


# --- the connection or request was refused before any route ran ---------------


class MethodNotAllowed(RbeeError):
    code = "METHOD_NOT_ALLOWED"
    status = 405


class HeadersTooLarge(RbeeError):
    """The request line and headers together are over the queen's limit."""

    code = "HEADERS_TOO_LARGE"
    status = 431


class ClientTooSlow(RbeeError):
    """A request's head or body did not arrive within the connection's time limit."""

    code = "CLIENT_TOO_SLOW"
    status = 408


class TooManyConnections(RbeeError):  # one client address holds more than allowed
    code = "TOO_MANY_CONNECTIONS"
    status = 503


class InvalidSshKey(InvalidRequest):
    """`ssh_key_path` names a file that is not a private key."""

    code = "INVALID_SSH_KEY"
