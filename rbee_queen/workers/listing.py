"""A worker as the API lists it: its row, with the exact live state."""

from __future__ import annotations

from typing import Any

from rbee_queen.store.tables import Worker
from rbee_queen.workers.live import LiveWorker
from rbee_queen.workers.states import WorkerState

S = WorkerState


def worker_json(row: Worker, live: LiveWorker | None) -> dict[str, Any]:
    state = row.state
    if live is not None and state in (S.IDLE, S.BUSY):  # the exact count, not the record
        state = S.BUSY.value if live.in_flight else S.IDLE.value
    return {
        "worker_id": row.worker_id,
        "node": row.node_id,  # type: ignore[attr-defined]
        "state": state,
        "model_ref": row.model_ref,
        "backend": row.backend,
        "device": row.device,
        "pid": row.pid,
        "port": row.port,
        "url": live.url if live else None,
        "started_at": row.started_at.isoformat() if row.started_at else None,
        "last_error": row.last_error,
        "vram_bytes": row.vram_bytes,
        # its RAM bound on the node (0: none) and what set it (memory_bounds.py)
        "memory_limit_bytes": row.memory_limit_bytes,
        "memory_limit_source": row.memory_limit_source,
    }
