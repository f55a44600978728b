"""`rbee-keeper nodes status`: each node probed now, one line per node (and per GPU)."""

from __future__ import annotations

import argparse
from typing import Any

from rbee_keeper.commands import Subcommands
from rbee_keeper.local_queen import connect
from rbee_keeper.output import cell, note, print_json, print_table

GIB = 1024**3


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    nodes = commands.add_parser("nodes", help="the live state of the nodes")
    actions = nodes.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = actions.add_parser(
        "status", parents=[common], help="probe every node (or one) and show what it has"
    )
    status.add_argument("--node", metavar="NAME", help="only this node")
    status.set_defaults(handler=show_status)


def show_status(args: argparse.Namespace) -> int:
    with connect(args.queen_url) as queen:
        answer = queen.node_status(args.node)
    nodes = answer.get("nodes") or []
    if args.json:
        print_json(answer)
        return 0
    for notice in answer.get("notices") or []:  # the queen's own state, above all else
        note(f"!! {notice.get('message')}")
    if not nodes:
        note("no nodes yet: add one with `rbee-keeper setup add-node`")
        return 0
    headers = ["NODE", "STATUS", "LATENCY", "PYTHON", "CPUS", "RAM FREE/TOTAL", "DISK FREE"]
    print_table(headers + ["DEVICES"], [status_row(node) for node in nodes])
    for node in nodes:
        if node.get("error"):
            error = node["error"]
            note(f"{node['node_name']}: [{error.get('code')}] {error.get('message')}")
    return 0


def status_row(node: dict[str, Any]) -> list[str]:
    latency = node.get("latency_ms")
    ram = f"{gib(node.get('ram_available_bytes'))}/{gib(node.get('ram_total_bytes'))} GiB"
    return [
        cell(node.get("node_name")),
        cell(node.get("status")),
        f"{latency:.1f} ms" if isinstance(latency, int | float) else "-",
        cell(node.get("python")),
        cell(node.get("cpus")),
        ram if node.get("ram_total_bytes") else "-",
        f"{gib(node.get('disk_free_bytes'))} GiB" if node.get("disk_free_bytes") else "-",
        devices(node),
    ]


def devices(node: dict[str, Any]) -> str:
    """`cpu; cuda:0 RTX 3090 1.0/24.0 GiB 41C 3%`, one entry per GPU."""
    if node.get("status") != "reachable":
        return "-"
    parts = ["cpu"]
    for gpu in node.get("gpus") or []:
        used, total = gpu.get("memory_used_mib"), gpu.get("memory_total_mib")
        memory = f"{mib_as_gib(used)}/{mib_as_gib(total)} GiB"
        temperature = f"{gpu['temperature_c']}C" if gpu.get("temperature_c") is not None else "-"
        load = f"{gpu['utilization_pct']}%" if gpu.get("utilization_pct") is not None else "-"
        parts.append(f"cuda:{gpu.get('index')} {gpu.get('name')} {memory} {temperature} {load}")
    return "; ".join(parts)


def gib(value: Any) -> str:
    return f"{value / GIB:.1f}" if isinstance(value, int | float) else "?"


def mib_as_gib(value: Any) -> str:
    return f"{value / 1024:.1f}" if isinstance(value, int | float) else "?"
