"""`rbee-keeper workers ...`: the inference workers running on the nodes."""

from __future__ import annotations

import argparse
from typing import Any

from rbee_keeper.commands import Subcommands
from rbee_keeper.local_queen import connect
from rbee_keeper.output import ago, cell, note, print_json, print_table


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    workers = commands.add_parser("workers", help="list and stop workers")
    actions = workers.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", parents=[common], help="show the workers on all nodes")
    listing.set_defaults(handler=list_workers)

    shutdown = actions.add_parser("shutdown", parents=[common], help="stop one worker")
    shutdown.add_argument("--id", required=True, dest="worker_id", metavar="WORKER_ID")
    shutdown.set_defaults(handler=shutdown_worker)


def list_workers(args: argparse.Namespace) -> int:
    with connect(args.queen_url) as queen:
        answer = queen.list_workers()
    workers = answer.get("workers") or []
    if args.json:
        print_json(answer)
    elif not workers:
        note("no workers running")
    else:
        headers = ["ID", "NODE", "STATE", "MODEL", "DEVICE", "PID", "PORT", "MEMORY", "STARTED"]
        print_table(headers, [worker_row(worker) for worker in workers])
    return 0


def shutdown_worker(args: argparse.Namespace) -> int:
    with connect(args.queen_url) as queen:
        answer = queen.shutdown_worker(args.worker_id)
    if args.json:
        print_json(answer)
    else:
        how = "forced after the grace period" if answer.get("forced") else "gracefully"
        print(f"stopped worker {answer.get('worker_id', args.worker_id)} ({how})")
    return 0


def worker_row(worker: dict[str, Any]) -> list[str]:
    device = f"{worker.get('backend')}:{worker.get('device')}"
    values = [worker.get(field) for field in ("worker_id", "node", "state", "model_ref")]
    values += [device, worker.get("pid"), worker.get("port")]
    return [cell(value) for value in values] + [memory_bound(worker), ago(worker.get("started_at"))]


def memory_bound(worker: dict[str, Any]) -> str:
    """`512 MiB (node)`: the worker's RAM bound and the setting that chose it."""
    limit = worker.get("memory_limit_bytes")
    if not isinstance(limit, int):
        return "-"  # started before the bound was recorded
    if limit == 0:
        return "none"
    return f"{limit // 1024**2} MiB ({worker.get('memory_limit_source')})"
