"""Fan-out, reconnects and the health loop against real test hosts (namespaces)."""

from __future__ import annotations

import asyncio
import functools
import shutil
from pathlib import Path

import pytest

from rbee_queen.errors import ConnectionTimeout, NodeUnreachable
from rbee_queen.fleet.fanout import fan_out
from rbee_queen.fleet.known_hosts import HostKeyStore
from rbee_queen.fleet.pool import PoolLimits, SessionPool
from rbee_queen.fleet.session import NodeSession, NodeTarget
from rbee_queen.fleet.worker_stream import ConnectionPool, StreamError
from rbee_queen.nodes.health import HealthMonitor
from rbee_queen.store.db import open_database
from rbee_queen.store.tables import Node
from tests.plugins.testbed import Testbed


def targets(bed: Testbed) -> list[NodeTarget]:
    return [
        NodeTarget(h.hostname, h.address, h.port, h.user, str(bed.client_key), "~/.rbee")
        for h in bed.hosts
    ]


@pytest.fixture
def pool(testbed: Testbed, rbee_home: Path) -> SessionPool:
    known = rbee_home / "known_hosts"
    shutil.copy(testbed.known_hosts, known)
    return SessionPool(HostKeyStore(known), 3.0, PoolLimits(backoff_base_s=0.2, backoff_max_s=0.5))


async def whoami(session: NodeSession) -> tuple[str, str]:
    probe = await session.call("probe", install_path=session.install_dir)
    return probe["hostname"], session.install_dir


async def test_fan_out_reaches_every_host_as_its_own_user(
    testbed: Testbed, pool: SessionPool
) -> None:
    try:
        result = await fan_out(pool, targets(testbed), whoami, timeout=20)
        assert result.failed == {}
        assert {h for h, _ in result.succeeded.values()} == {h.hostname for h in testbed.hosts}
        for host in testbed.hosts:
            # Each helper runs as the host's ordinary user, in that user's home.
            assert result.succeeded[host.hostname][1] == f"{host.home}/.rbee"
        # Warm: the same sessions answer again, nothing is reconnected.
        first = {t.name: pool.peek(t.name) for t in targets(testbed)}
        again = await fan_out(pool, targets(testbed), whoami, timeout=20)
        assert again.failed == {}
        assert all(pool.peek(name) is session for name, session in first.items())
    finally:
        await pool.close_all()


async def test_one_dead_host_fails_alone_and_comes_back(
    testbed: Testbed, pool: SessionPool
) -> None:
    dead = testbed.hosts[-1]
    try:
        assert (await fan_out(pool, targets(testbed), whoami, timeout=20)).failed == {}
        dead.set_link(up=False)
        result = await fan_out(pool, targets(testbed), whoami, timeout=2)
        assert set(result.failed) == {dead.hostname}
        assert isinstance(result.failed[dead.hostname], ConnectionTimeout)
        assert set(result.succeeded) == {h.hostname for h in testbed.hosts[:-1]}
        # The dead session was dropped; the next call fails to reconnect (no route).
        result = await fan_out(pool, targets(testbed), whoami, timeout=2)
        assert isinstance(result.failed[dead.hostname], NodeUnreachable | ConnectionTimeout)
        dead.set_link(up=True)
        for _ in range(50):  # waits out the reconnect backoff, at most 0.5 s here
            result = await fan_out(pool, targets(testbed), whoami, timeout=5)
            if not result.failed:
                break
            await asyncio.sleep(0.1)
        assert result.failed == {}
    finally:
        dead.set_link(up=True)
        await pool.close_all()


async def test_per_node_limit_bounds_calls_in_flight(testbed: Testbed, rbee_home: Path) -> None:
    shutil.copy(testbed.known_hosts, rbee_home / "known_hosts")
    pool = SessionPool(HostKeyStore(rbee_home / "known_hosts"), 3.0, PoolLimits(per_node=2))
    target = targets(testbed)[0]
    in_flight = peak = 0

    async def slow(session: NodeSession) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await session.call("path_info", path="/")
        await asyncio.sleep(0.05)
        in_flight -= 1

    try:
        results = await asyncio.gather(
            *(fan_out(pool, [target], slow, timeout=20) for _ in range(8))
        )
        assert all(not r.failed for r in results)
        assert peak == 2
    finally:
        await pool.close_all()


async def test_health_loop_marks_a_cut_host_unreachable_then_reachable(
    testbed: Testbed, pool: SessionPool, rbee_home: Path
) -> None:
    db = open_database(rbee_home / "queen.db")
    for t in targets(testbed):
        Node.create(
            name=t.name,
            ssh_host=t.host,
            ssh_port=t.port,
            ssh_user=t.user,
            ssh_key_path=t.key_path,
            install_path=t.install_path,
        )
    monitor = HealthMonitor(pool, interval_s=1.0)
    cut = testbed.hosts[1]

    def status(name: str) -> str:
        return Node.get(Node.name == name).status

    async def wait_for(name: str, wanted: str, rounds: int) -> int:
        for _ in range(rounds * 20):
            if status(name) == wanted:
                return monitor.rounds
            await asyncio.sleep(0.05)
        raise AssertionError(f"{name} still {status(name)} after {rounds} rounds")

    try:
        monitor.start()
        for t in targets(testbed):
            await wait_for(t.name, "reachable", rounds=10)
        assert monitor.health(cut.hostname).latency_ms is not None
        cut.set_link(up=False)
        cut_round = monitor.rounds
        marked_round = await wait_for(cut.hostname, "unreachable", rounds=10)
        # Counted in rounds, not seconds: at most two intervals after the cut.
        assert marked_round <= cut_round + 2
        row = Node.get(Node.name == cut.hostname)
        assert row.last_error and row.last_connected is not None
        assert all(status(h.hostname) == "reachable" for h in testbed.hosts if h != cut)
        cut.set_link(up=True)
        await wait_for(cut.hostname, "reachable", rounds=10)
        assert Node.get(Node.name == cut.hostname).last_error is None
    finally:
        cut.set_link(up=True)
        await monitor.stop()
        await pool.close_all()
        db.close()


async def test_a_channel_to_a_closed_port_is_a_connection_error(
    testbed: Testbed, pool: SessionPool
) -> None:
    """What an inference stream meets when the worker is gone: sshd refuses the
    direct-tcpip channel, and the session says so as a socket would."""
    try:
        session = await pool.get(targets(testbed)[0])
        with pytest.raises(ConnectionError, match="no channel to port 9"):
            await session.open_channel(9, asyncio.Protocol)
        streams = ConnectionPool(functools.partial(session.open_channel, 9))
        with pytest.raises(StreamError, match="cannot connect: no channel"):
            await streams.connection()
    finally:
        await pool.close_all()
