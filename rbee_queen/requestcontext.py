"""What travels with one request through the queen: its correlation id and its
deadline. Context variables, so every layer (and every log line) sees the values
of the request it works for without passing them through each call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from contextvars import ContextVar

CORRELATION_HEADER = "x-correlation-id"
DEADLINE_HEADER = "x-request-deadline"
_CORRELATION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

correlation_id: ContextVar[str] = ContextVar("correlation_id", default="-")
# Unix time in seconds after which the request's work is abandoned, or None.
deadline: ContextVar[float | None] = ContextVar("deadline", default=None)


def new_correlation_id(sent: str | None) -> str:
    """The caller's id when it is fit for a log line, else a fresh one."""
    # os.urandom straight: secrets.token_hex is the same bytes through three
    # more Python calls, on every request's path.
    return sent if sent and _CORRELATION_ID.match(sent) else os.urandom(8).hex()


def parse_deadline(value: str) -> float | None:
    """X-Request-Deadline (Unix time in milliseconds) as Unix seconds; None if malformed."""
    # isascii first: isdigit() also takes "²" and other digits int() refuses.
    if not (value.isascii() and value.isdigit()) or len(value) > 16:
        return None
    return int(value) / 1000


def earliest(*deadlines: float | None) -> float | None:
    """A child never extends its parent's deadline: the earliest one wins."""
    known = [d for d in deadlines if d is not None]
    return min(known) if known else None


# uvloop's clock (libuv's) is read once per loop turn, in whole milliseconds: a
# timer armed later in a turn fires early by as much (up to 0.93 ms measured).
TIMER_GRANULARITY_S = 0.001


def loop_time_at(at: float) -> float:
    """The running loop's time for Unix time `at`, for a timer that must not fire
    before it. A deadline enforced early would tell the caller REQUEST_TIMEOUT
    while the worker, shown a deadline not yet passed, starts the job anyway.
    Assumes the loop's clock is the monotonic one (asyncio's and uvloop's are)."""
    loop = asyncio.get_running_loop()
    stale = max(0.0, time.monotonic() - loop.time())  # how far the loop's clock lags
    return loop.time() + (at - time.time()) + stale + TIMER_GRANULARITY_S


def outgoing_headers() -> dict[str, str]:
    """Headers that carry this request's id and deadline to a worker."""
    headers = {CORRELATION_HEADER: correlation_id.get()}
    at = deadline.get()
    if at is not None:
        headers[DEADLINE_HEADER] = str(int(at * 1000))
    return headers


class CorrelationFilter(logging.Filter):
    """Puts the current request's id on every record as `correlation_id`."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = correlation_id.get()
        return True
