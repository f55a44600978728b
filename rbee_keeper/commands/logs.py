"""`rbee-keeper logs --node N [--worker ID] [--follow]`: worker logs from a node."""

from __future__ import annotations

import argparse
import time

from rbee_keeper.commands import Subcommands
from rbee_keeper.local_queen import connect
from rbee_keeper.output import print_json

FOLLOW_INTERVAL_S = 1.0


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    logs = commands.add_parser(
        "logs", parents=[common], help="show the logs of the workers on a node"
    )
    logs.add_argument("--node", required=True, help="the node whose workers to show")
    logs.add_argument("--worker", dest="worker_id", metavar="WORKER_ID", help="only this worker")
    logs.add_argument("--lines", type=int, default=50, help="how many lines (default: 50)")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")
    logs.set_defaults(handler=show_logs)


def show_logs(args: argparse.Namespace) -> int:
    seen: dict[str, list[str]] = {}
    with connect(args.queen_url) as queen:
        while True:
            answer = queen.logs(node=args.node, worker_id=args.worker_id, lines=args.lines)
            if args.json and not args.follow:
                print_json(answer)
                return 0
            for worker_id, lines in _by_worker(answer).items():
                for line in new_lines(seen.get(worker_id, []), lines):
                    print(f"{worker_id} | {line}", flush=True)
                seen[worker_id] = lines
            if not args.follow:
                return 0
            time.sleep(FOLLOW_INTERVAL_S)


def _by_worker(answer: dict[str, object]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    entries = answer.get("entries")
    for entry in entries if isinstance(entries, list) else []:
        grouped.setdefault(str(entry.get("worker_id")), []).append(str(entry.get("line")))
    return grouped


def new_lines(before: list[str], now: list[str]) -> list[str]:
    """The lines of `now` not already printed: the tail is a sliding window, so
    skip the longest head of `now` that repeats the end of `before`."""
    for overlap in range(min(len(before), len(now)), 0, -1):
        if before[-overlap:] == now[:overlap]:
            return now[overlap:]
    return now
