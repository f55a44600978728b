"""A worker ended by its node's OOM killer: the coded error and the event (the
bound the next start of that model on that node gets, raised past what was
seen, is memory_bounds.py's).

The verdict is the helper's: its status of a dead worker carries `oom` only
when the worker's memory group counted an OOM kill.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from rbee_queen.errors import RbeeError, WorkerOom
from rbee_queen.fleet.session import NodeSession
from rbee_wire.helper_ops import WorkerOomReport, WorkerStatusResult
from rbee_wire.queen_events import WorkerOom as WorkerOomEvent


def oom_of(status: WorkerStatusResult) -> WorkerOomReport | None:
    """The OOM report of a dead worker's status, or None when nothing was counted."""
    report = status.get("oom")
    return report if not status["alive"] and report and report["oom_kills"] > 0 else None


async def oom_after_lost_stream(
    session: NodeSession, worker_id: str, wait_s: float = 2.0
) -> WorkerOomReport | None:
    """The OOM report of a worker whose stream just broke. A killed process
    closes its sockets before it has finished exiting, so the helper is asked
    until it sees the process gone (for at most `wait_s`) before its memory
    group's counter is read; None when it lives on or nothing was counted."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            status = await session.ops.worker_status(
                worker_id=worker_id, run_dir=session.run_dir, timeout=5.0
            )
        except RbeeError:
            return None  # the node is gone too: no counter to read
        if not status["alive"] or time.monotonic() > deadline:
            return oom_of(status)
        await asyncio.sleep(0.05)


def oom_mid_stream(
    worker_id: str, node: str, report: WorkerOomReport
) -> tuple[str, dict[str, Any]]:
    """The stream's error message and details for a worker OOM-killed mid-stream."""
    limit, peak = report.get("limit_bytes"), report.get("peak_bytes")
    message = (
        f"worker {worker_id} on {node} was killed by the node's OOM killer mid-stream "
        f"(memory limit {_mib(limit)}, peak {_mib(peak)})"
    )
    details = {"worker_id": worker_id, "node": node, "phase": "serving"}
    return message, {**details, "limit_bytes": limit, "peak_bytes": peak}


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
