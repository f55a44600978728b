"""Cold connects are bounded in concurrency (`ssh.connect_concurrency`), and a
node slow to answer holds one connect slot, not the round.

The slow nodes are real TCP listeners on loopback that accept and never speak
SSH; the others are the session's real loopback sshd, under several names.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rbee_queen.errors import ConnectionTimeout
from rbee_queen.fleet.fanout import fan_out
from rbee_queen.fleet.known_hosts import HostKeyStore
from rbee_queen.fleet.pool import PoolLimits, SessionPool
from rbee_queen.fleet.session import NodeSession, NodeTarget
from tests.plugins.sshd import SshServer


@dataclass
class SilentListener:
    """Accepts connections and never answers; counts how many are open at once.
    With `hold_s`, it closes each connection itself after that long, so a
    connection is counted until the listener, not the client, ends it."""

    hold_s: float | None
    port: int = 0
    open_now: int = 0
    most_open: int = 0
    accepted: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            if self.hold_s is None:
                await reader.read()  # until the client gives up
            else:
                await asyncio.sleep(self.hold_s)
        finally:
            self.open_now -= 1
            writer.close()


@pytest.fixture
async def silent() -> AsyncIterator[SilentListener]:
    listener = SilentListener(hold_s=0.3)
    server = await asyncio.start_server(listener.handle, "127.0.0.1", 0)
    listener.port = server.sockets[0].getsockname()[1]
    try:
        yield listener
    finally:
        server.close()


def silent_targets(listener: SilentListener, count: int, key: Path) -> list[NodeTarget]:
    return [
        NodeTarget(f"slow{i}", "127.0.0.1", listener.port, "nobody", str(key), "~/.rbee")
        for i in range(count)
    ]


def sshd_targets(sshd: SshServer, count: int, root: Path) -> list[NodeTarget]:
    return [
        NodeTarget(
            f"n{i}", sshd.host, sshd.port, sshd.user, str(sshd.client_key), str(root / f"n{i}")
        )
        for i in range(count)
    ]


def pool_for(sshd: SshServer, home: Path, connects: int, connect_timeout: float) -> SessionPool:
    known = home / "known_hosts"
    known.write_text(f"[{sshd.host}]:{sshd.port} {sshd.host_public_key}\n")
    limits = PoolLimits(connects=connects, backoff_base_s=5.0, backoff_max_s=5.0)
    return SessionPool(HostKeyStore(known), connect_timeout, limits)


async def ping(session: NodeSession) -> object:
    return await session.call("ping")


async def test_no_more_connects_at_once_than_the_setting(
    silent: SilentListener, sshd: SshServer, rbee_home: Path
) -> None:
    pool = pool_for(sshd, rbee_home, connects=3, connect_timeout=10.0)
    result = await fan_out(pool, silent_targets(silent, 8, sshd.client_key), ping, timeout=20)
    assert len(result.failed) == 8  # each connection closed by the listener
    assert silent.accepted == 8  # every node was tried...
    assert silent.most_open == 3  # ...never more than three at once, and three did overlap


async def test_a_slow_node_holds_one_connect_slot_not_the_round(
    sshd: SshServer, rbee_home: Path, tmp_path: Path
) -> None:
    stuck = SilentListener(hold_s=None)
    server = await asyncio.start_server(stuck.handle, "127.0.0.1", 0)
    stuck.port = server.sockets[0].getsockname()[1]
    # The slow node's connect would take 30 s; the round gives each node 6 s.
    pool = pool_for(sshd, rbee_home, connects=2, connect_timeout=30.0)
    slow = silent_targets(stuck, 1, sshd.client_key)
    warm, cold = sshd_targets(sshd, 2, tmp_path), sshd_targets(sshd, 5, tmp_path)[2:]
    try:
        assert not (await fan_out(pool, warm, ping, timeout=15)).failed
        result = await fan_out(pool, slow + cold, ping, timeout=6)
        # The cold nodes connected through the other slot while the slow one held its own.
        assert set(result.succeeded) == {t.name for t in cold}
        assert isinstance(result.failed["slow0"], ConnectionTimeout)
        # Given up by the round, its connect counts as failed: during its backoff
        # the slow node fails at once and takes no slot (no new connection).
        assert pool.backoff_remaining("slow0") > 0
        assert set((await fan_out(pool, slow, ping, timeout=6)).failed) == {"slow0"}
        assert stuck.accepted == 1
        # With the only slot held by a slow node, live sessions still answer.
        (rbee_home / "single").mkdir()
        single = pool_for(sshd, rbee_home / "single", connects=1, connect_timeout=30.0)
        assert not (await fan_out(single, warm, ping, timeout=15)).failed
        again = await fan_out(single, slow + warm, ping, timeout=2)
        assert set(again.succeeded) == {t.name for t in warm}
        assert set(again.failed) == {"slow0"}
        await single.close_all()
    finally:
        await pool.close_all()
        server.close()
