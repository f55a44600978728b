"""The queen's SSH links send no empty SSH_MSG_IGNORE ahead of each packet
(rbee_queen/fleet/ssh_ignore.py), on a real sshd; a CBC link keeps them.

What went out is read from asyncssh's own packet log (its debug level 3)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from rbee_queen.fleet.known_hosts import HostKeyStore
from rbee_queen.fleet.session import ENCRYPTION_ALGS, open_session
from rbee_queen.fleet.ssh_ignore import without_empty_ignores
from tests.plugins.sshd import SshServer, variant

SENT = re.compile(r"\bSent (MSG_[A-Z_]+) ")


class Echo(asyncio.Protocol):
    """The far end of a forward: answers each write with its bytes."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class Collect(asyncio.Protocol):
    """The queen's end of a direct-tcpip channel: what came back."""

    def __init__(self) -> None:
        self.got = b""
        self.arrived = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def session_started(self) -> None:
        pass

    def data_received(self, data: bytes, datatype: object = None) -> None:
        self.got += data
        self.arrived.set()


def sent_packets(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The names of the packets sent, from lines like
    `[conn=1, chan=0, pktid=9] Sent MSG_CHANNEL_DATA (94), 13 bytes`."""
    messages = (r.getMessage() for r in caplog.records if r.name.startswith("asyncssh"))
    return [m.group(1) for m in map(SENT.search, messages) if m is not None]


@pytest.fixture
def packet_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG, logger="asyncssh")
    asyncssh.set_debug_level(3)
    try:
        yield caplog
    finally:
        asyncssh.set_debug_level(1)


def test_the_queen_offers_no_cbc_cipher() -> None:
    assert not [alg for alg in ENCRYPTION_ALGS if "cbc" in alg]


async def test_a_node_link_sends_its_data_without_empty_ignores(
    sshd: SshServer, tmp_path: Path, packet_log: pytest.LogCaptureFixture
) -> None:
    target = sshd.target(tmp_path / "inst")
    store = HostKeyStore(tmp_path / "known_hosts")
    session = await open_session(target, store, connect_timeout=10, accept_new_host_key=True)
    server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", 0)
    try:
        packet_log.clear()
        assert (await session.ops.ping())["cwd"] == session.helper_dir  # the helper's RPC
        port = server.sockets[0].getsockname()[1]
        forward = await session.open_channel(port, Collect)  # a worker's path
        forward.transport.write(b"x" * 5000)
        while len(forward.got) < 5000:
            forward.arrived.clear()
            await asyncio.wait_for(forward.arrived.wait(), 10)
        assert forward.got == b"x" * 5000
    finally:
        server.close()
        await session.close()
    sent = sent_packets(packet_log)
    assert sent.count("MSG_CHANNEL_DATA") >= 2, sent  # the RPC and the forward at least
    assert "MSG_IGNORE" not in sent, sent


@pytest.fixture(scope="module")
def sshd_with_cbc(sshd: SshServer) -> Iterator[SshServer]:
    """The shared sshd's keys and settings, taking aes128-cbc too."""
    with variant(sshd, "cbc", lambda config: config + "Ciphers +aes128-cbc\n") as server:
        yield server


async def test_a_cbc_link_keeps_them(
    sshd_with_cbc: SshServer, packet_log: pytest.LogCaptureFixture
) -> None:
    conn = await sshd_with_cbc.connect(["aes128-cbc"])
    try:
        assert conn.get_extra_info("send_cipher") == "aes128-cbc"
        assert without_empty_ignores(conn) is conn
        packet_log.clear()
        done = await conn.run("true", check=True)
        assert done.exit_status == 0
    finally:
        conn.close()
        await conn.wait_closed()
    sent = sent_packets(packet_log)
    assert "MSG_CHANNEL_REQUEST" in sent, sent  # the command's `exec`
    assert sent.count("MSG_IGNORE") >= sent.count("MSG_CHANNEL_REQUEST"), sent
