"""Label values kept bounded: a metric's labels never carry a request id, a
prompt, a path or free text, only values from a known, short list."""

from __future__ import annotations

from rbee_queen.errors import RbeeError

OTHER = "OTHER"
# The worker's stop reasons (rbee_wire.worker_events.StopReason): a request that ended well.
STOP_REASONS = frozenset({"EOS", "MAX_TOKENS", "STOP_SEQUENCE", "CANCELLED"})


def _codes(cls: type[RbeeError]) -> set[str]:
    found = {cls.code}
    for sub in cls.__subclasses__():
        found |= _codes(sub)
    return found


ERROR_CODES = frozenset(_codes(RbeeError))


def error_code(code: object) -> str:
    """A code from the queen's error tree, or OTHER."""
    return code if isinstance(code, str) and code in ERROR_CODES else OTHER


def api_error_code(code: object) -> str:
    """An API answer's code: the OpenAI-compatible routes write the queen's
    codes in lower case (`node_held_elsewhere`), counted as the same code."""
    if isinstance(code, str) and code.islower():
        code = code.upper()
    return error_code(code)


def outcome(value: object) -> str:
    """A request's end: a stop reason, an error code, or OTHER."""
    if isinstance(value, str) and value in STOP_REASONS:
        return value
    return error_code(value)


def is_error(value: object) -> bool:
    return outcome(value) not in STOP_REASONS


def status_class(status: int) -> str:
    return f"{status // 100}xx"


def stop_reason(reason: str) -> str:
    """Why a worker was drained and stopped: `idle` (the idle stop) or `requested`
    (a person, a node's removal, the queen stopping)."""
    return "idle" if reason.startswith("idle") else "requested"


def circuit_opened(state: object, reason: object) -> bool:
    return state == "failed" and isinstance(reason, str) and reason.startswith("circuit open")
