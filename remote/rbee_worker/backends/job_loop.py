"""One thread drives a continuous-batching generator; requests talk to it by queue.

exllamav2's dynamic generator is not thread-safe: jobs are enqueued, cancelled
and advanced (`iterate()`, one forward pass for every active job) from one
thread only. Each request thread submits its job and reads its own queue of
results; a cancel is a message the loop acts on between two passes, after
which the job's pages are free and its ticket is closed.

The generator is any object with `enqueue(job)`, `iterate() -> list[dict]`,
`cancel(job)` and `num_remaining_jobs()`; each result dict carries the job's
`identifier` and `eos` (True on its last result), as exllamav2's do.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from rbee_worker.errors import one_line

log = logging.getLogger(__name__)

# A request thread wakes this often to look at its client's cancel flag.
POLL_S = 0.05


class Ticket:
    """One job's end of the loop: its results in order, then the end."""

    def __init__(self, ident: int, job: Any) -> None:
        self.ident = ident
        self.job = job
        self.results: queue.SimpleQueue[dict[str, Any] | BaseException | None] = queue.SimpleQueue()
        self.cancelled = False

    def next(self, timeout: float = POLL_S) -> dict[str, Any] | BaseException | None:
        """The next result; `{}` when none came within `timeout`; None once the job
        is over (cancelled); an exception when the generator failed."""
        try:
            return self.results.get(timeout=timeout)
        except queue.Empty:
            return {}


class JobLoop:
    def __init__(self, generator: Any, name: str = "generator-loop") -> None:
        self._generator = generator
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._incoming: list[Ticket] = []
        self._cancels: list[Ticket] = []
        self._active: dict[int, Ticket] = {}
        self._ids = itertools.count(1)
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, make_job: Callable[[int], Any]) -> Ticket:
        """`make_job(identifier)` builds the job; its results come to the ticket."""
        ident = next(self._ids)
        ticket = Ticket(ident, make_job(ident))
        with self._lock:
            if self._stopped:
                raise RuntimeError("the generator loop has stopped")
            self._incoming.append(ticket)
        self._wake.set()
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        with self._lock:
            self._cancels.append(ticket)
        self._wake.set()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
        self._wake.set()
        self._thread.join(timeout=10)

    @property
    def active(self) -> int:
        """Jobs the loop holds (queued in the generator or running)."""
        with self._lock:
            return len(self._active) + len(self._incoming)

    # --- the loop thread ---------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._stopped:
                    break
                incoming, self._incoming = self._incoming, []
                cancels, self._cancels = self._cancels, []
            for ticket in incoming:
                self._enqueue(ticket)
            for ticket in cancels:
                self._cancel(ticket)
            if not self._active:
                self._wake.wait()
                self._wake.clear()
                continue
            self._step()
        for ticket in list(self._active.values()):
            self._cancel(ticket)

    def _enqueue(self, ticket: Ticket) -> None:
        try:
            self._generator.enqueue(ticket.job)
        except Exception as exc:  # e.g. the job cannot fit in the cache at all
            ticket.results.put(exc)
            return
        self._active[ticket.ident] = ticket

    def _cancel(self, ticket: Ticket) -> None:
        if self._active.pop(ticket.ident, None) is None:
            return  # finished (or failed) before the cancel arrived: nothing to free
        try:
            self._generator.cancel(ticket.job)
        except Exception as exc:
            log.error("cancelling job %d failed: %s", ticket.ident, one_line(exc))
        ticket.cancelled = True
        ticket.results.put(None)

    def _step(self) -> None:
        try:
            results = self._generator.iterate()
        except Exception as exc:
            # A failed pass leaves no job in a known state: end them all with the
            # error, and take them out of the generator so the next pass is clean.
            log.error("generator pass failed: %s", one_line(exc), exc_info=True)
            for ticket in list(self._active.values()):
                self._active.pop(ticket.ident, None)
                try:
                    self._generator.cancel(ticket.job)
                except Exception:
                    log.debug("cancel after a failed pass also failed", exc_info=True)
                ticket.results.put(exc)
            return
        for result in results:
            owner = self._active.get(result.get("identifier", -1))
            if owner is None:
                continue
            owner.results.put(result)
            if result.get("eos"):
                del self._active[owner.ident]
