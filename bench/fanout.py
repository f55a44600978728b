"""Fan-out over test hosts: rbee's persistent sessions against one `ssh host cmd`
per host and against Fabric's ThreadingGroup, for N = 1, 4, 16 hosts.

    sudo .venv/bin/python -m bench.fanout [--rounds 200]

Needs root: it makes 16 test hosts (network namespaces in 10.213.SLOT.0/24,
one sshd and one ordinary user each, see tests/plugins/testbed.py) and removes
them again at the end. Measured, each as the median of its rounds:

- rbee warm: one health round (a `ping` over every node's open helper channel)
- rbee warm probe: the full `probe` (CPUs, RAM, disk, GPUs) over every node
- rbee cold: new connections, helper start and a ping on every node, with the
  CPU time spent per cold round by the queen side and by the test hosts' sshds
  and all they start (helpers included), which bounds how fast N cold connects
  can be on this machine's cores, and the queen side's share of it (on real
  nodes, each with its own CPU, only that share is spent in one place)
- ssh: `ssh host cat /proc/loadavg` per host, all hosts in parallel
- Fabric warm: `ThreadingGroup.run("cat /proc/loadavg")` on open connections
- Fabric cold: the same with new connections each round
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from rbee_queen.fleet.fanout import fan_out
from rbee_queen.fleet.known_hosts import HostKeyStore
from rbee_queen.fleet.pool import SessionPool
from rbee_queen.fleet.session import NodeSession, NodeTarget
from tests.plugins.testbed import Testbed, build, claim_slot, teardown, unavailable_reason

COMMAND = "cat /proc/loadavg"


def ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1000


def fleet_cpu_seconds(bed: Testbed) -> float:
    """CPU time spent so far by this process (the queen side) and by the test
    hosts' sshds with everything they started and reaped (per-connection sshds,
    shells, helpers): other load on the machine is not counted."""
    total = time.process_time()
    for proc in bed.sshds:
        with open(f"/proc/{proc.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        # utime, stime, cutime, cstime: fields 14-17 of proc(5), 12-15 after the name
        total += sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


async def timed(rounds: int, step: Callable[[], Awaitable[object]]) -> list[float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        await step()
        times.append(time.perf_counter() - started)
    return times


def targets(bed: Testbed, n: int) -> list[NodeTarget]:
    return [
        NodeTarget(h.hostname, h.address, 22, h.user, str(bed.client_key), "~/.rbee")
        for h in bed.hosts[:n]
    ]


async def ping(session: NodeSession) -> object:
    return await session.call("ping")


async def probe(session: NodeSession) -> object:
    return await session.call("probe", install_path=session.install_dir)


async def rbee_rounds(bed: Testbed, n: int, rounds: int, keys: HostKeyStore) -> dict[str, float]:
    nodes = targets(bed, n)

    async def cold() -> tuple[float, float, float]:
        """Wall seconds of one connect-and-ping round (closing is not timed), the
        queen side's CPU seconds in it, and the CPU seconds the round cost in all,
        closing included: a connection's sshd and helper are counted once the
        listening sshd has reaped them, after the close."""
        pool = SessionPool(keys, 10.0)
        cpu, started, queen_cpu = fleet_cpu_seconds(bed), time.perf_counter(), time.process_time()
        result = await fan_out(pool, nodes, ping, timeout=30)
        wall, queen_cpu = time.perf_counter() - started, time.process_time() - queen_cpu
        assert not result.failed, result.failed
        await pool.close_all()
        await asyncio.sleep(0.5)
        return wall, queen_cpu, fleet_cpu_seconds(bed) - cpu

    await cold()  # uploads the helper once per host; later cold rounds find it there
    colds = [await cold() for _ in range(max(5, rounds // 20))]
    cold_times = [wall for wall, _, _ in colds]
    cold_queen_cpu = statistics.median(queen for _, queen, _ in colds)
    cold_cpu = statistics.median(cpu for _, _, cpu in colds)
    pool = SessionPool(keys, 10.0)
    await fan_out(pool, nodes, ping, timeout=30)

    async def warm(op: Callable[[NodeSession], Awaitable[object]]) -> None:
        result = await fan_out(pool, nodes, op, timeout=30)
        assert not result.failed, result.failed

    warm_times = await timed(rounds, lambda: warm(ping))
    probe_times = await timed(max(10, rounds // 10), lambda: warm(probe))
    await pool.close_all()
    return {
        "rbee warm": ms(warm_times),
        "rbee probe": ms(probe_times),
        "rbee cold": ms(cold_times),
        "rbee cold cpu": cold_cpu * 1000,
        "rbee cold queen cpu": cold_queen_cpu * 1000,
    }


async def ssh_rounds(bed: Testbed, n: int, rounds: int) -> dict[str, float]:
    async def one(host_user: str, address: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            "ssh", "-i", str(bed.client_key), "-o", f"UserKnownHostsFile={bed.known_hosts}",
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-F", "/dev/null",
            f"{host_user}@{address}", COMMAND,
            stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert await proc.wait() == 0

    async def round_() -> None:
        await asyncio.gather(*(one(h.user, h.address) for h in bed.hosts[:n]))

    return {"ssh per host": ms(await timed(max(5, rounds // 20), round_))}


def fabric_rounds(bed: Testbed, n: int, rounds: int, home: Path) -> dict[str, float]:
    from fabric import ThreadingGroup

    hosts = [f"{h.user}@{h.address}" for h in bed.hosts[:n]]
    kwargs = {"key_filename": str(bed.client_key), "look_for_keys": False, "allow_agent": False}
    os.environ["HOME"] = str(home)  # paramiko reads ~/.ssh/known_hosts: the testbed's keys

    def group() -> ThreadingGroup:
        return ThreadingGroup(*hosts, connect_kwargs=kwargs)

    def cold() -> None:
        g = group()
        g.run(COMMAND, hide=True)
        g.close()

    cold_times = []
    for _ in range(max(5, rounds // 20)):
        started = time.perf_counter()
        cold()
        cold_times.append(time.perf_counter() - started)
    warm_group = group()
    warm_group.run(COMMAND, hide=True)  # its best case: connections already open
    warm_times = []
    for _ in range(max(10, rounds // 10)):
        started = time.perf_counter()
        warm_group.run(COMMAND, hide=True)
        warm_times.append(time.perf_counter() - started)
    warm_group.close()
    return {"fabric warm": ms(warm_times), "fabric cold": ms(cold_times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="warm rbee rounds per N")
    parser.add_argument("--sizes", default="1,4,16")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        raise SystemExit(f"bench.fanout: {reason}")
    sizes = [int(s) for s in args.sizes.split(",")]
    slot, fd = claim_slot()
    work = Path(tempfile.mkdtemp(prefix="rbee-bench-"))
    bed = None
    try:
        bed = build(slot, max(sizes))
        (work / ".ssh").mkdir()
        shutil.copy(bed.known_hosts, work / ".ssh" / "known_hosts")
        keys = HostKeyStore(work / "queen_known_hosts")
        shutil.copy(bed.known_hosts, keys.queen_file)
        rows = []
        for n in sizes:
            figures = asyncio.run(rbee_rounds(bed, n, args.rounds, keys))
            figures |= asyncio.run(ssh_rounds(bed, n, args.rounds))
            figures |= fabric_rounds(bed, n, args.rounds, work)
            rows.append((n, figures))
        report(rows)
    finally:
        teardown(slot)
        if bed is not None:
            for proc in bed.sshds:
                proc.wait(timeout=10)
        os.close(fd)
        shutil.rmtree(work, ignore_errors=True)


def report(rows: list[tuple[int, dict[str, float]]]) -> None:
    columns = [
        "rbee warm",
        "rbee probe",
        "rbee cold",
        "rbee cold cpu",
        "rbee cold queen cpu",
        "ssh per host",
        "fabric warm",
        "fabric cold",
    ]
    print(
        "| N | " + " | ".join(f"{c} (ms)" for c in columns) + " | fabric warm / rbee warm"
        " | ssh / rbee warm | rbee cold N / cold 1 |"
    )
    print("|" + " --- |" * (len(columns) + 4))
    cold_one = rows[0][1]["rbee cold"]
    cores = os.cpu_count() or 1
    for n, f in rows:
        cells = " | ".join(f"{f[c]:.2f}" for c in columns)
        print(
            f"| {n} | {cells} | {f['fabric warm'] / f['rbee warm']:.0f}x"
            f" | {f['ssh per host'] / f['rbee warm']:.0f}x | {f['rbee cold'] / cold_one:.2f} |"
        )
    print(
        f"\n'rbee cold cpu' is the CPU time of the queen side, the sshds and the helpers per cold"
        f" round; on {cores} cores"
        " a cold round cannot take less than that divided by the cores."
    )


if __name__ == "__main__":
    main()
