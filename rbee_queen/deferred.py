"""The queen's bookkeeping that no request waits for (audit entries, events for
the metrics and the dashboard, a stream's figures, a cache re-read), done a
millisecond after it was asked for, in the order it was asked for.

Why not at once, or at the event loop's next turn: the client, and sshd on
the way to a worker, often run on the CPU the queen runs on (a laptop running
rbee-keeper and the queen; every node reached over SSH). Work the queen does
right after a write is work that client or sshd waits behind before it can
read that write: with a stream's bookkeeping after its last bytes, its
client saw the response end 0.56 ms after the last write instead of 0.3, and
an audit entry written between
a request's head and its body held up the client's sending of the body
(`docs/benchmarks.md`). Done a millisecond later, the queen's event loop
sleeps first and they run; under load the work is done in batches instead.
While a request has not been answered yet (a `Hold`, from the request's
first byte until its answer's body begins: for an inference, its first
token) the work waits on, at most MAX_DELAY_S, so that it falls between
tokens or after the stream instead of between the client and the queen, the
queen and sshd, or the worker's first token and the client.

Outside a running event loop (a command, a test's plain function) the work is
done at once. `flush()` does what is pending now: before a reader that must
see it (`/metrics`, the audit log's own synchronous entries) and at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import deque
from collections.abc import Callable

log = logging.getLogger("rbee.queen.deferred")
DELAY_S = 0.001
MAX_DELAY_S = 0.05  # under a steady stream of requests, a batch at least this often


class _Pending:
    """One event loop's queue of deferred calls and its timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weakly: this object is the value of a dictionary whose key is the loop.
        self.loop = weakref.ref(loop)
        self.calls: deque[Callable[[], object]] = deque()
        self.timer: asyncio.TimerHandle | None = None
        self.running = False
        self.held = 0  # requests not answered yet
        self.since = 0.0  # when the oldest call waiting was queued

    def add(self, call: Callable[[], object]) -> None:
        if not self.calls:
            self.since = time.monotonic()
        self.calls.append(call)
        if self.timer is None and not self.running:
            self._arm()

    def _arm(self) -> None:
        loop = self.loop()
        if loop is not None:
            self.timer = loop.call_later(DELAY_S, self.due)

    def due(self) -> None:
        """The timer: run, unless a request is waiting for its answer and the
        oldest call has waited less than MAX_DELAY_S."""
        self.timer = None
        if self.held and time.monotonic() - self.since < MAX_DELAY_S:
            self._arm()
            return
        self.run()

    def run(self) -> None:
        """Every call queued, the ones queued meanwhile too, oldest first; a
        call that fails is logged and the rest still run. Re-entered from a
        call (a synchronous audit entry flushing), it returns: the calls before
        it have run, the ones after run next, in order."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.running:
            return
        self.running = True
        try:
            while self.calls:
                call = self.calls.popleft()
                try:
                    call()
                except Exception:
                    log.exception("deferred bookkeeping failed: %r", call)
        finally:
            self.running = False


_pending: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pending] = (
    weakref.WeakKeyDictionary()
)


def _of_loop() -> _Pending | None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    pending = _pending.get(loop)
    if pending is None:
        pending = _pending[loop] = _Pending(loop)
    return pending


def later(call: Callable[[], object]) -> None:
    """Do `call` about DELAY_S from now, after what was deferred before it."""
    pending = _of_loop()
    if pending is None:
        call()
    else:
        pending.add(call)


class Hold:
    """One request not answered yet: what is deferred waits until `release()`
    (called once or more) or MAX_DELAY_S."""

    def __init__(self) -> None:
        self._pending = _of_loop()
        if self._pending is not None:
            self._pending.held += 1

    def release(self) -> None:
        if self._pending is not None:
            self._pending.held -= 1
            self._pending = None


def flush() -> None:
    """Do now what this event loop has deferred (nothing outside one)."""
    try:
        pending = _pending.get(asyncio.get_running_loop())
    except RuntimeError:
        return
    if pending is not None:
        pending.run()
