"""The two request headers the queen sends along: its correlation id, so one
request can be followed through the queen's log and ours, and the deadline."""

from __future__ import annotations

import re

from rbee_worker.params import FieldError, InvalidRequest

CORRELATION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DEADLINE_HEADER = "x-request-deadline"


def correlation_id(value: str | None) -> str:
    """The caller's id, or '' when it sent none (or one not fit for a log line)."""
    return value if value and CORRELATION_ID.match(value) else ""


def deadline(value: str | None) -> float | None:
    """X-Request-Deadline, Unix time in milliseconds, as Unix seconds."""
    if value is None:
        return None
    if not value.isdigit() or len(value) > 16:
        message = "X-Request-Deadline must be Unix time in milliseconds"
        raise InvalidRequest([FieldError("X-Request-Deadline", "type", message)])
    return int(value) / 1000
