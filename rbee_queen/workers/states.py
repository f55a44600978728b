"""Worker states and the one place their transitions live.

    spawning -> loading -> idle <-> busy -> draining -> stopped
        \\          \\         \\                          ^
         `----------`---------`--> failed / hung -> killing -> restarting
                                                        \\-> stopped

`StateRecorder.transition()` is the only code that changes a worker's state;
it checks the move is allowed, stores it and records the event with its reason.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from rbee_queen.store.tables import Worker, WorkerEvent, utcnow


class WorkerState(StrEnum):
    SPAWNING = "spawning"
    LOADING = "loading"
    IDLE = "idle"
    BUSY = "busy"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"
    HUNG = "hung"
    KILLING = "killing"
    RESTARTING = "restarting"


S = WorkerState
ALLOWED: dict[WorkerState, frozenset[WorkerState]] = {
    S.SPAWNING: frozenset({S.LOADING, S.FAILED, S.KILLING, S.STOPPED}),
    S.LOADING: frozenset({S.IDLE, S.FAILED, S.HUNG, S.KILLING, S.STOPPED}),
    S.IDLE: frozenset({S.BUSY, S.DRAINING, S.FAILED, S.HUNG, S.KILLING, S.STOPPED}),
    S.BUSY: frozenset({S.IDLE, S.DRAINING, S.FAILED, S.HUNG, S.KILLING}),
    S.DRAINING: frozenset({S.STOPPED, S.KILLING, S.FAILED}),
    S.FAILED: frozenset({S.KILLING, S.RESTARTING, S.STOPPED}),
    S.HUNG: frozenset({S.KILLING}),
    S.KILLING: frozenset({S.STOPPED, S.RESTARTING, S.FAILED}),  # FAILED: not restarted
    S.RESTARTING: frozenset({S.SPAWNING, S.STOPPED, S.FAILED}),
    S.STOPPED: frozenset(),
}
LIVE = frozenset({S.SPAWNING, S.LOADING, S.IDLE, S.BUSY, S.DRAINING})
# In the middle of recovery: the process may or may not exist.
RECOVERING = frozenset({S.HUNG, S.KILLING, S.RESTARTING})
# What `workers list` shows: all but the stopped (a worker that failed for good
# stays listed with its reason until it is started again or removed).
LISTED = LIVE | RECOVERING | {S.FAILED}


class IllegalTransition(RuntimeError):
    pass


TransitionListener = Callable[[Worker, "WorkerState | None", "WorkerState", str], object]


class StateRecorder:
    """The one place a worker's state changes: it checks the move is allowed,
    stores it, records the event with its reason, then tells `on_change` (the
    queen's event bus, wired at the composition root)."""

    def __init__(self, on_change: TransitionListener | None = None) -> None:
        self._on_change = on_change

    def record_new(self, worker: Worker, reason: str) -> None:
        """Record a just-created worker's first state, as a transition from nothing."""
        WorkerEvent.create(worker_id=worker.worker_id, to_state=worker.state, reason=reason)
        if self._on_change is not None:
            self._on_change(worker, None, WorkerState(worker.state), reason)

    def transition(self, worker: Worker, to: WorkerState, reason: str = "") -> None:
        current = WorkerState(worker.state)
        if current == to:
            return
        if to not in ALLOWED[current]:
            raise IllegalTransition(f"worker {worker.worker_id}: {current} -> {to} is not allowed")
        worker.state = to.value
        worker.updated_at = utcnow()
        if reason and to in (S.FAILED, S.HUNG, S.KILLING):
            worker.last_error = reason
        worker.save()
        WorkerEvent.create(
            worker_id=worker.worker_id, from_state=current.value, to_state=to.value, reason=reason
        )
        if self._on_change is not None:
            self._on_change(worker, current, to, reason)
