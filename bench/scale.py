"""One queen driving many nodes: health rounds, CPU, memory and cold connects
over 16, 32, 64 (and more) test hosts.

    sudo .venv/bin/python -m bench.scale [--sizes 16,32,64] [--rounds 12] [--cut 8]
        [--slow 8 [--slow-rate 32kbit]]

Needs root: it makes the test hosts (network namespaces, one sshd and one
ordinary user each, see tests/plugins/testbed.py; 32 a testbed slot) and
removes them at the end. For each size N:

- cold connect of all nodes in this process (`SessionPool`, `fan_out`), once
  per `ssh.connect_concurrency` value in --concurrency;
- a real queen process (default health interval unless --interval), restarted
  so its first round connects every node anew, then --rounds warm rounds:
  median and p99 of their `health_round` events, the queen's CPU per round,
  per node and as a share of one core, its RSS per node over a queen with no
  node, and `rbee-keeper nodes status` end to end;
- with --cut K, at the largest size: K links down, a warm and a cold round;
  with --slow K, K links slowed (tc tbf and a filler stream), three warm
  rounds, a cold one and the next: when the others answered next to the
  slowed ones (bench/scale_links.py); then a cold connect of the slowed
  hosts in this process, with no round's time limit;
- what one test host costs (MemAvailable; its processes' RSS while connected).

The machine may be shared: the load average is printed with each figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from bench.scale_links import cut, link_figures, slowed
from bench.scale_links import report_links as report_links_table
from bench.scale_queen import Queen, add_nodes, nodes_status_s
from rbee_queen.fleet.fanout import fan_out
from rbee_queen.fleet.known_hosts import HostKeyStore
from rbee_queen.fleet.pool import PoolLimits, SessionPool
from rbee_queen.fleet.session import NodeSession, NodeTarget
from tests.plugins.testbed import Testbed, TestHost, build, claim_slot, teardown, unavailable_reason

PER_SLOT = 32
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def mem_available_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mib(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20


def hosts_rss_mib(fleet: Fleet, n: int) -> float:
    """RSS of every process in the first n hosts' namespaces (sshds, helpers),
    summed: shared pages counted once per process, so an upper bound."""
    total = 0.0
    for _, host in fleet.hosts[:n]:
        pids = subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True, text=True)
        for pid in pids.stdout.split():
            try:
                total += rss_mib(int(pid))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return total


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


@dataclass
class Fleet:
    """Test hosts over as many testbed slots as the size needs."""

    beds: list[tuple[Testbed, int]] = field(default_factory=list)

    @property
    def hosts(self) -> list[tuple[Testbed, TestHost]]:
        return [(bed, host) for bed, _ in self.beds for host in bed.hosts]

    def known_hosts(self) -> str:
        return "".join(bed.known_hosts.read_text() for bed, _ in self.beds)

    def targets(self, n: int) -> list[NodeTarget]:
        return [
            NodeTarget(h.hostname, h.address, 22, h.user, str(bed.client_key), "~/.rbee")
            for bed, h in self.hosts[:n]
        ]

    @classmethod
    def make(cls, count: int) -> Fleet:
        fleet = cls()
        try:
            while len(fleet.hosts) < count:
                slot, fd = claim_slot()
                try:
                    fleet.beds.append((build(slot, min(PER_SLOT, count - len(fleet.hosts))), fd))
                except BaseException:
                    os.close(fd)
                    raise
        except BaseException:
            fleet.remove()
            raise
        return fleet

    def remove(self) -> None:
        for bed, fd in self.beds:
            teardown(bed.slot)
            for proc in bed.sshds:
                proc.wait(timeout=10)
            os.close(fd)


async def ping(session: NodeSession) -> object:
    return await session.call("ping")


async def cold_connect(targets: list[NodeTarget], keys: HostKeyStore, connects: int) -> list[float]:
    """Wall and this process's CPU seconds of connecting all the nodes and one ping each."""
    pool = SessionPool(keys, 30.0, PoolLimits(connects=connects))
    started, cpu = time.perf_counter(), time.process_time()
    result = await fan_out(pool, targets, ping, timeout=120)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    await pool.close_all()
    await asyncio.sleep(0.5)
    if result.failed:
        raise RuntimeError(f"cold connect failed: {list(result.failed.items())[:3]}")
    return [wall, cpu]


def empty_queen_rss(work: Path, interval: float) -> float:
    """The RSS of a queen with no node, after a health round and a status call."""
    queen = Queen(work / "empty", interval)
    queen.home.mkdir()
    queen.start()
    try:
        assert queen.proc is not None
        with queen.client() as c:
            c.get("/v2/nodes/status").raise_for_status()
        time.sleep(min(interval, 5) * 2)
        return rss_mib(queen.proc.pid)
    finally:
        queen.stop()


def queen_figures(fleet: Fleet, n: int, work: Path, args: argparse.Namespace) -> dict[str, float]:
    queen = Queen(work / f"q{n}", args.interval)
    queen.home.mkdir()
    (queen.home / "known_hosts").write_text(fleet.known_hosts())
    queen.start()
    add_nodes(queen, fleet.hosts[:n])
    queen.stop()
    queen.start()  # every node connects anew in the first round
    try:
        assert queen.proc is not None
        first = queen.wait_rounds(1)[0]
        cpu0, t0 = cpu_seconds(queen.proc.pid), time.monotonic()
        warm = queen.wait_rounds(1 + args.rounds)[1:]
        cpu, window = cpu_seconds(queen.proc.pid) - cpu0, time.monotonic() - t0
        durations = [float(str(e["duration_s"])) * 1000 for e in warm]
        failed = sum(int(str(e["failed"])) for e in warm)
        figures = {
            "first round s": float(str(first["duration_s"])),
            "first round failed": float(str(first["failed"])),
            "warm median ms": statistics.median(durations),
            "warm p99 ms": percentile(durations, 99),
            "warm failed": float(failed),
            "cpu per round ms": cpu / args.rounds * 1000,
            "cpu per node ms": cpu / args.rounds / n * 1000,
            "core %": cpu / window * 100,
            "load": float(loadavg()),
        }
        figures["nodes status s"] = nodes_status_s(queen)
        figures["rss MiB"] = rss_mib(queen.proc.pid)
        figures["host MiB"] = hosts_rss_mib(fleet, n) / n
        return figures
    finally:
        queen.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16,32,64")
    parser.add_argument("--rounds", type=int, default=12, help="warm health rounds per size")
    parser.add_argument("--interval", type=float, default=5.0, help="health interval (s)")
    parser.add_argument("--concurrency", default="4,16,64", help="connect bounds to time")
    parser.add_argument("--cut", type=int, default=0, help="links to cut at the largest size")
    parser.add_argument("--slow", type=int, default=0, help="links to slow at the largest size")
    parser.add_argument("--slow-rate", default="32kbit", help="a slowed link's rate (tc tbf)")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        raise SystemExit(f"bench.scale: {reason}")
    sizes = [int(s) for s in args.sizes.split(",")]
    bounds = [int(c) for c in args.concurrency.split(",")]
    work = Path(tempfile.mkdtemp(prefix="rbee-scale-"))
    work.chmod(0o755)
    before = mem_available_kib()
    fleet = Fleet.make(max(sizes))
    try:
        time.sleep(1)
        per_host = (before - mem_available_kib()) / len(fleet.hosts) / 1024
        print(f"one test host costs this machine {per_host:.2f} MiB (MemAvailable drop)")
        keys = HostKeyStore(work / "bench_known_hosts")
        keys.queen_file.write_text(fleet.known_hosts())
        empty = empty_queen_rss(work, args.interval)
        print(f"queen with no node: RSS {empty:.1f} MiB")
        report_cold(fleet, sizes, bounds, keys)
        rows = [(n, queen_figures(fleet, n, work, args)) for n in sizes]
        report_queen(rows, empty, args)
        report_links(fleet, max(sizes), work, keys, args)
    finally:
        fleet.remove()
        shutil.rmtree(work, ignore_errors=True)


def report_links(
    fleet: Fleet, n: int, work: Path, keys: HostKeyStore, args: argparse.Namespace
) -> None:
    """--cut and --slow: the last hosts of the largest size, their links cut or
    slowed (bench/scale_links.py), on the queen of that size; and how long a
    cold connect of the slowed hosts takes with no round's time limit."""
    for how, k in (("cut", args.cut), ("slowed", args.slow)):
        if not k:
            continue
        hosts = [h for _, h in fleet.hosts[n - k : n]]
        impair = partial(cut, hosts) if how == "cut" else partial(slowed, hosts, args.slow_rate)
        measured = link_figures(Queen(work / f"q{n}", args.interval), hosts, how, impair)
        detail = f" (tbf {args.slow_rate} and a filler stream)" if how == "slowed" else ""
        report_links_table(n, k, how, measured, detail)
        if how == "slowed":
            with slowed(hosts, args.slow_rate):
                wall, _ = asyncio.run(cold_connect(fleet.targets(n)[n - k :], keys, k))
            print(f"a cold connect of the {k} slowed hosts, no round's limit: {wall:.2f} s")


def report_cold(fleet: Fleet, sizes: list[int], bounds: list[int], keys: HostKeyStore) -> None:
    asyncio.run(cold_connect(fleet.targets(max(sizes)), keys, max(bounds)))  # uploads the helpers
    print("\n| N | connect_concurrency | cold connect of all (s) | its CPU here (s) | load |")
    print("| --- | --- | --- | --- | --- |")
    for n in sizes:
        for bound in bounds:
            wall, cpu = asyncio.run(cold_connect(fleet.targets(n), keys, bound))
            print(f"| {n} | {bound} | {wall:.2f} | {cpu:.2f} | {loadavg()} |")


def report_queen(
    rows: list[tuple[int, dict[str, float]]], empty: float, args: argparse.Namespace
) -> None:
    print(f"\nqueen process, health interval {args.interval:g} s, {args.rounds} warm rounds a size")
    print(
        "| N | first round (cold) | warm round median | warm p99 | queen CPU a round"
        " | a node | share of one core | RSS | RSS a node | nodes status | a test host | load |"
    )
    print("|" + " --- |" * 12)
    for n, f in rows:
        per_node = (f["rss MiB"] - empty) / n * 1024
        failures = f" ({f['first round failed']:.0f} failed)" if f["first round failed"] else ""
        warm_failed = f" ({f['warm failed']:.0f} failed)" if f["warm failed"] else ""
        print(
            f"| {n} | {f['first round s']:.2f} s{failures} | {f['warm median ms']:.1f} ms"
            f" | {f['warm p99 ms']:.1f} ms{warm_failed} | {f['cpu per round ms']:.1f} ms"
            f" | {f['cpu per node ms']:.2f} ms | {f['core %']:.2f} %"
            f" | {f['rss MiB']:.1f} MiB | {per_node:.0f} KiB | {f['nodes status s']:.2f} s"
            f" | {f['host MiB']:.1f} MiB | {f['load']:.2f} |"
        )


if __name__ == "__main__":
    main()
