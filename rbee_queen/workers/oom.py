"""A worker ended by its node's OOM killer: the coded error, the event, and the
bound the next start of that model on that node gets (raised past what was
seen, so an OOM is never started again at the same size).

The verdict is the helper's: its status of a dead worker carries `oom` only
when the worker's memory group counted an OOM kill.
"""

from __future__ import annotations

from rbee_queen.errors import WorkerOom
from rbee_queen.workers.resources import OOM_RAISE
from rbee_wire.helper_ops import WorkerOomReport, WorkerStatusResult
from rbee_wire.queen_events import WorkerOom as WorkerOomEvent


class OomBounds:
    """Per (node, model): the memory bound the next worker gets after an OOM."""

    def __init__(self) -> None:
        self._next: dict[tuple[str, str], int] = {}

    def next_limit(self, node: str, model_ref: str) -> int | None:
        return self._next.get((node, model_ref))

    def raise_after(self, node: str, model_ref: str, report: WorkerOomReport) -> int:
        seen = max(report.get("limit_bytes") or 0, report.get("peak_bytes") or 0)
        before = self._next.get((node, model_ref), 0)
        raised = max(int(seen * OOM_RAISE), int(before * OOM_RAISE))
        self._next[(node, model_ref)] = raised
        return raised


def oom_of(status: WorkerStatusResult) -> WorkerOomReport | None:
    """The OOM report of a dead worker's status, or None when nothing was counted."""
    report = status.get("oom")
    return report if not status["alive"] and report and report["oom_kills"] > 0 else None


def oom_error(
    worker_id: str, node: str, model_ref: str, phase: str, report: WorkerOomReport, next_limit: int
) -> WorkerOom:
    limit, peak = report.get("limit_bytes"), report.get("peak_bytes")
    return WorkerOom(
        f"worker {worker_id} on {node} was killed by the node's OOM killer while {phase} "
        f"(memory limit {_mib(limit)}, peak {_mib(peak)}); "
        f"its next start gets {_mib(next_limit)}",
        worker_id=worker_id,
        node=node,
        phase=phase,
        limit_bytes=limit,
        peak_bytes=peak,
        next_limit_bytes=next_limit,
    )


def oom_event(exc: WorkerOom, model_ref: str) -> WorkerOomEvent:
    d = exc.details
    return WorkerOomEvent(
        type="worker_oom",
        worker_id=d["worker_id"],
        node=d["node"],
        model_ref=model_ref,
        phase=d["phase"],
        limit_bytes=d["limit_bytes"],
        peak_bytes=d["peak_bytes"],
        next_limit_bytes=d["next_limit_bytes"],
    )


def _mib(n: int | None) -> str:
    return "unknown" if n is None else f"{n / 1024**2:.1f} MiB"
