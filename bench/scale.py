"""One queen driving many nodes: health rounds, CPU, memory and cold connects
over 16, 32, 64 (and more) test hosts.

    sudo .venv/bin/python -m bench.scale [--sizes 16,32,64] [--rounds 12]

Needs root: it makes the test hosts (network namespaces, one sshd and one
ordinary user each, see tests/plugins/testbed.py; 32 a testbed slot) and
removes them at the end. For each size N, against a real queen process
(`python -m rbee_queen`, the default health interval unless --interval):

- cold connect of all nodes (in this process, `SessionPool` and `fan_out`, the
  queen's own code): wall time and this process's CPU, once per
  `ssh.connect_concurrency` value in --concurrency;
- the queen's first health round after a restart (every node connected anew,
  under the default bound) and the next --rounds warm rounds: median and p99
  of each round's duration (the queen's `health_round` events), the queen's
  CPU per round and per node, and its CPU as a share of one core;
- the queen's memory per node: its RSS with N nodes minus its RSS with none;
- `rbee-keeper nodes status` end to end (a probe of every node, rendered);
- what one test host costs this machine (MemAvailable before and after).

The machine may be shared: the load average is printed with each figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from rbee_queen.fleet.fanout import fan_out
from rbee_queen.fleet.known_hosts import HostKeyStore
from rbee_queen.fleet.pool import PoolLimits, SessionPool
from rbee_queen.fleet.session import NodeSession, NodeTarget
from tests.plugins.sshd import free_port
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


async def cold_connect(fleet: Fleet, n: int, keys: HostKeyStore, connects: int) -> list[float]:
    """Wall and this process's CPU seconds of connecting all n nodes and one ping each."""
    pool = SessionPool(keys, 30.0, PoolLimits(connects=connects))
    started, cpu = time.perf_counter(), time.process_time()
    result = await fan_out(pool, fleet.targets(n), ping, timeout=120)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    await pool.close_all()
    await asyncio.sleep(0.5)
    if result.failed:
        raise RuntimeError(f"cold connect failed: {list(result.failed.items())[:3]}")
    return [wall, cpu]


@dataclass
class Queen:
    home: Path
    interval: float
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    events: list[dict[str, object]] = field(default_factory=list)

    def start(self) -> None:
        port = free_port()
        env = {**os.environ, "RBEE_HOME": str(self.home)}
        env["RBEE_HEALTH_INTERVAL"] = str(self.interval)
        with open(self.home / "queen.out", "ab") as log:
            argv = [sys.executable, "-m", "rbee_queen", "--port", str(port)]
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.url, self.events = f"http://127.0.0.1:{port}", []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=0.5).status_code == 200:
                    threading.Thread(target=self._read_events, daemon=True).start()
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError(f"queen did not start: {(self.home / 'queen.out').read_text()}")

    def client(self) -> httpx.Client:
        token = (self.home / "api-token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.Client(base_url=self.url, timeout=120, headers=headers)

    def _read_events(self) -> None:
        try:
            with self.client() as c, c.stream("GET", "/v2/events", timeout=None) as r:
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        self.events.append(json.loads(line[5:]))
        except httpx.HTTPError:
            return  # the queen stopped

    def rounds(self) -> list[dict[str, object]]:
        return [e for e in list(self.events) if e.get("type") == "health_round"]

    def wait_rounds(self, count: int) -> list[dict[str, object]]:
        deadline = time.monotonic() + count * self.interval + 120
        while len(self.rounds()) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(self.rounds())} health rounds of {count}")
            time.sleep(0.05)
        return self.rounds()[:count]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=60)


def add_nodes(queen: Queen, fleet: Fleet, n: int) -> None:
    def add(pair: tuple[Testbed, TestHost]) -> None:
        bed, h = pair
        body = {
            "node_name": h.hostname,
            "ssh_host": h.address,
            "ssh_user": h.user,
            "ssh_key_path": str(bed.client_key),
            "install_path": "~/.rbee",
        }
        with queen.client() as c:
            r = c.post("/v2/registry/beehives/add", json=body)
        if r.status_code != 201:
            raise RuntimeError(f"add {h.hostname}: {r.text}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(add, fleet.hosts[:n]))


def nodes_status_s(queen: Queen, runs: int = 3) -> float:
    env = {**os.environ, "RBEE_HOME": str(queen.home), "RBEE_QUEEN_URL": queen.url}
    keeper = [sys.executable, "-m", "rbee_keeper", "--text", "nodes", "status"]
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(keeper, env=env, capture_output=True, text=True, timeout=300)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise RuntimeError(f"nodes status: {done.stdout[-500:]} {done.stderr[-500:]}")
    return statistics.median(times)


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
    add_nodes(queen, fleet, n)
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
    finally:
        fleet.remove()
        shutil.rmtree(work, ignore_errors=True)


def report_cold(fleet: Fleet, sizes: list[int], bounds: list[int], keys: HostKeyStore) -> None:
    asyncio.run(cold_connect(fleet, max(sizes), keys, max(bounds)))  # uploads the helpers
    print("\n| N | connect_concurrency | cold connect of all (s) | its CPU here (s) | load |")
    print("| --- | --- | --- | --- | --- |")
    for n in sizes:
        for bound in bounds:
            wall, cpu = asyncio.run(cold_connect(fleet, n, keys, bound))
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
