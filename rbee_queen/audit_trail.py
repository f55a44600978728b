"""Which queen events become audit entries: each fact audited exactly once.

A listener on the event bus, wired at the composition root (services). Worker
lifecycle facts come from here only; the code that kills or restarts a worker
publishes the event and writes nothing to the audit log itself.
"""

from __future__ import annotations

from typing import Any

from rbee_queen.audit import AuditLog

# A worker's state changes that are audit facts (killing and restarting are
# not: `worker_killed` and `worker_restarted` carry those, with more to say).
STATE_ENTRIES = {
    "spawning": "worker.spawned",
    "stopped": "worker.stopped",
    "failed": "worker.failed",
}


class AuditTrail:
    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    def observe(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "worker":
            name = STATE_ENTRIES.get(event["state"])
            if name is not None:
                self.audit.record(
                    name,
                    worker_id=event["worker_id"],
                    node=event["node"],
                    model_ref=event["model_ref"],
                    reason=event["reason"],
                )
        elif kind == "worker_killed":
            self.audit.record("worker.killed", worker_id=event["worker_id"], forced=event["forced"])
        elif kind == "worker_oom":
            self.audit.record(
                "worker.oom",
                **{k: event[k] for k in ("worker_id", "node", "model_ref", "phase")},
                **{k: event[k] for k in ("limit_bytes", "peak_bytes", "next_limit_bytes")},
            )
        elif kind == "worker_restarted":
            self.audit.record(
                "worker.restarted", worker_id=event["worker_id"], reason=event["reason"]
            )
