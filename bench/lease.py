"""What the node leases cost one queen: a renewal round (renew ours, take the
lapsed and missing ones, read back what is held) on a real database with N
nodes, timed over many rounds; its CPU, and that CPU as a share of one core
at the default renewal interval.

    python -m bench.lease --nodes 1,64,256 --rounds 300
    python -m bench.lease --database postgresql://rbee@127.0.0.1:5432/bench

Without --database each size gets a new SQLite file in a temporary folder.
With --database the nodes and leases tables of that database are filled
and emptied again; the password comes from libpq's PGPASSFILE.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from rbee_queen.nodes.lease import LeaseSettings, NodeLeases
from rbee_queen.store.db import open_database
from rbee_queen.store.tables import Node, NodeLease

RENEW_S = 3.0  # queens.lease_renew_s's default


def measure(location: str, nodes: int, rounds: int) -> dict[str, float]:
    db = open_database(location)
    try:
        NodeLease.delete().execute()
        Node.delete().execute()
        Node.insert_many(
            [
                {"name": f"n{i}", "ssh_host": "h", "ssh_user": "u"}
                | {"ssh_key_path": "k", "install_path": "/i"}
                for i in range(nodes)
            ]
        ).execute()
        leases = NodeLeases(LeaseSettings("bench-queen", ttl_s=10, renew_s=RENEW_S))
        assert len(leases.renew_round()) == nodes  # the first round takes them all
        walls, cpus = [], []
        for _ in range(rounds):
            wall, cpu = time.perf_counter(), time.process_time()
            leases.renew_round()
            cpus.append(time.process_time() - cpu)
            walls.append(time.perf_counter() - wall)
        NodeLease.delete().execute()
        Node.delete().execute()
    finally:
        db.close()
    walls.sort()
    cpu_ms = sum(cpus) / len(cpus) * 1000
    return {
        "median_ms": statistics.median(walls) * 1000,
        "p99_ms": walls[min(len(walls) - 1, int(len(walls) * 0.99))] * 1000,
        "cpu_ms": cpu_ms,
        "core_pct": cpu_ms / 1000 / RENEW_S * 100,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="1,64,256", help="comma-separated node counts")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--database", help="a postgresql:// URL (default: a new SQLite file)")
    args = parser.parse_args()
    print(f"load average: {open('/proc/loadavg').read().split()[:3]}")
    print("| nodes | round median ms | p99 ms | CPU per round ms | one core at 3 s, % |")
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(n) for n in args.nodes.split(",")):
            where = args.database or str(Path(tmp) / f"bench-{size}-{os.getpid()}.db")
            r = measure(where, size, args.rounds)
            print(
                f"| {size} | {r['median_ms']:.2f} | {r['p99_ms']:.2f} | "
                f"{r['cpu_ms']:.2f} | {r['core_pct']:.3f} |"
            )


if __name__ == "__main__":
    main()
