"""Which RAM bound a worker gets, and the bound an OOM kill raised.

The setting, first one given wins: the catalog model's `memory_limit_mib`,
the node's `worker_memory_limit_mib`, the queen's `workers.memory_limit_mib`,
else the preflight's RAM estimate plus the runtime's own (resources.py). -1
at any level means no bound. Above all of them, a bound raised after the
node's OOM killer ended a worker of the model on that node: never lower than
that, and kept in the database, so a restarted queen does not start the model
at the size it died at again.
"""

from __future__ import annotations

from dataclasses import dataclass

from rbee_queen.store.tables import ModelEntry, Node, RaisedMemoryBound, utcnow
from rbee_queen.workers.resources import OOM_RAISE
from rbee_wire.helper_ops import WorkerOomReport

# Where a worker's bound came from, as its row and the workers list say it.
RAISED = "oom"  # raised after an OOM kill of the model on the node
MODEL, NODE, QUEEN, ESTIMATE, NONE = "model", "node", "queen", "estimate", "none"
SOURCE_TEXT = {
    RAISED: "raised after an OOM kill",
    MODEL: "the model's setting",
    NODE: "the node's setting",
    QUEEN: "workers.memory_limit_mib",
    ESTIMATE: "the RAM estimate",
    NONE: "none set",
}


@dataclass(frozen=True)
class BoundSetting:
    """The configured bound in MiB (0: the estimate; -1: none) and its level."""

    mib: int
    source: str


def bound_setting(node: Node, model_ref: str, queen_mib: int) -> BoundSetting:
    """The first bound set, model before node before queen. Several catalog names
    may share one reference (their workers are shared): the largest of theirs."""
    entries = ModelEntry.select(ModelEntry.memory_limit_mib).where(
        (ModelEntry.model_ref == model_ref) & (ModelEntry.memory_limit_mib != 0)
    )
    model_mibs = [int(entry.memory_limit_mib) for entry in entries]
    if model_mibs:
        return BoundSetting(-1 if -1 in model_mibs else max(model_mibs), MODEL)
    node_mib = int(node.worker_memory_limit_mib or 0)
    if node_mib:
        return BoundSetting(node_mib, NODE)
    if queen_mib:
        return BoundSetting(queen_mib, QUEEN)
    return BoundSetting(0, ESTIMATE)


def source_of(limit_bytes: int, setting: BoundSetting, raised_bytes: int | None) -> str:
    """Which level set the bound a worker got (`limit_bytes`, 0: none)."""
    if not limit_bytes:
        return NONE
    return RAISED if raised_bytes and limit_bytes == raised_bytes else setting.source


class RaisedBounds:
    """Per (node, model): the bound the next worker gets after an OOM, in the
    database."""

    def next_limit(self, node: str, model_ref: str) -> int | None:
        row = RaisedMemoryBound.get_or_none(
            (RaisedMemoryBound.node == node) & (RaisedMemoryBound.model_ref == model_ref)
        )
        return int(row.limit_bytes) if row is not None else None

    def raise_after(self, node: str, model_ref: str, report: WorkerOomReport) -> int:
        """Past what was seen (the bound and the peak), and past the bound raised
        before, so a second OOM at the old size still moves it up."""
        seen = max(report.get("limit_bytes") or 0, report.get("peak_bytes") or 0)
        before = self.next_limit(node, model_ref) or 0
        raised = max(int(seen * OOM_RAISE), int(before * OOM_RAISE))
        updated = (
            RaisedMemoryBound.update(limit_bytes=raised, raised_at=utcnow())
            .where((RaisedMemoryBound.node == node) & (RaisedMemoryBound.model_ref == model_ref))
            .execute()
        )
        if not updated:
            RaisedMemoryBound.create(node=node, model_ref=model_ref, limit_bytes=raised)
        return raised
