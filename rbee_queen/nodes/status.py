"""`nodes status`: a probe fanned out to every node (or one), one report per node.

A node that fails is reported with its error next to the others, never instead
of them. Each answer also feeds the health board and the node's row, so a
status call is as good as a health round for the nodes it reached.
"""

from __future__ import annotations

from typing import Any

from rbee_queen.fleet.fanout import NodeOutcome, fan_out
from rbee_queen.fleet.pool import SessionPool
from rbee_queen.fleet.session import NodeSession
from rbee_queen.nodes.health import HealthMonitor, ping_latency
from rbee_queen.nodes.inventory import target_of
from rbee_queen.store.tables import Node

PROBE_FIELDS = (
    "hostname",
    "python",
    "cpus",
    "ram_total_bytes",
    "ram_available_bytes",
    "disk_free_bytes",
    "backends",
    "devices",
    "gpus",
    "gpu_source",
)


async def probe_node(session: NodeSession) -> dict[str, Any]:
    latency = await ping_latency(session)
    probe = await session.ops.probe(install_path=session.install_dir, timeout=30.0)
    return {"latency_ms": latency, **probe}


async def fleet_status(
    pool: SessionPool, monitor: HealthMonitor, nodes: list[Node], timeout: float
) -> list[dict[str, Any]]:
    def record(outcome: NodeOutcome[dict[str, Any]]) -> None:
        latency = outcome.value["latency_ms"] if outcome.value else None
        monitor.record(NodeOutcome(outcome.node, latency, outcome.error, outcome.elapsed_ms))
        if outcome.value:
            Node.update(backends=outcome.value["backends"], devices=outcome.value["devices"]).where(
                Node.name == outcome.node
            ).execute()

    result = await fan_out(
        pool, [target_of(n) for n in nodes], probe_node, timeout=timeout, on_done=record
    )
    return [report(result.outcomes[n.name]) for n in nodes]


def report(outcome: NodeOutcome[dict[str, Any]]) -> dict[str, Any]:
    value = outcome.value or {}
    error = outcome.error
    return {
        "node_name": outcome.node,
        "status": "unreachable" if error else "reachable",
        "latency_ms": value.get("latency_ms"),
        "error": {"code": error.code, "message": error.message} if error else None,
        **{field: value.get(field) for field in PROBE_FIELDS},
    }
