"""What the queen holds in memory for each running worker, and how it reaches it.

A worker binds 127.0.0.1 on its node; the queen reaches it through a port
forward on the node's SSH connection, so no worker port is ever open to the
network. A node set to `worker_access = "direct"` trades that for one hop
less: its workers also listen on the node's address (the one the queen's SSH
connection reached), still behind their bearer token, and the queen calls
them there.
"""

from __future__ import annotations

import asyncio
import functools
import socket
from dataclasses import dataclass, field

from rbee_queen.errors import WorkerDraining, WorkerStartFailed
from rbee_queen.fleet.session import NodeSession
from rbee_queen.fleet.worker_auth import WorkerTokens
from rbee_queen.fleet.worker_stream import ConnectionPool, tcp_opener

# A worker reached directly has no SSH keepalive watching its link: a link that
# goes dead mid-stream is noticed by TCP keepalives instead, as soon as the SSH
# one would (idle 2 s, then 3 probes 2 s apart).
# (Options a platform lacks are left out: there the OS's defaults apply.)
KEEPALIVE_SOCKET_OPTIONS = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)] + [
    (socket.IPPROTO_TCP, getattr(socket, name), value)
    for name, value in (("TCP_KEEPIDLE", 2), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 3))
    if hasattr(socket, name)
]


@dataclass
class LiveWorker:
    """A running worker as the queen knows it in memory."""

    worker_id: str
    node: str
    model_ref: str
    remote_port: int
    local_port: int
    slots: int = 1
    in_flight: int = 0  # streams the queen has open to it; routing reads this
    draining: bool = False  # being shut down: routing skips it
    # Set while no stream is open; a drain waits on it.
    no_streams: asyncio.Event = field(default_factory=asyncio.Event)
    # The node connection that holds the forward; once it is closed (the link
    # went down), the next request forwards again on a new connection.
    session: NodeSession | None = None
    # The node's address when the queen calls the worker directly (no forward).
    direct_host: str | None = None
    device: str = "cpu"  # cpu or cuda:N; routing matches requests on it
    # Kept-alive connections for inference streams (see worker_stream); made on
    # first use, dropped when the node's connection is made anew.
    streams: ConnectionPool | None = None
    state_record: asyncio.TimerHandle | None = None  # see registry.STATE_RECORD_DELAY_S

    @property
    def free_slots(self) -> int:
        return self.slots - self.in_flight

    @property
    def address(self) -> tuple[str, int]:
        """Where the queen's HTTP calls reach the worker: its node's address, or
        the local end of the forward."""
        if self.direct_host is not None:
            return self.direct_host, self.remote_port
        return "127.0.0.1", self.local_port

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def stream_pool(self) -> ConnectionPool:
        if self.streams is None:
            if self.direct_host is not None:
                opener = tcp_opener(self.direct_host, self.remote_port, KEEPALIVE_SOCKET_OPTIONS)
            else:
                assert self.session is not None
                opener = functools.partial(self.session.open_channel, self.remote_port)
            self.streams = ConnectionPool(opener)
        return self.streams

    def drop_streams(self) -> None:
        if self.streams is not None:
            self.streams.close()
            self.streams = None

    def forget_address(self, tokens: WorkerTokens) -> None:
        """Stop sending the worker's token to where the queen called it."""
        if self.direct_host is not None:
            tokens.forget(self.remote_port, host=self.direct_host)
        tokens.forget(self.local_port)
        self.drop_streams()


def node_address(session: NodeSession) -> str:
    """The node's address as the queen's SSH connection reached it: where its
    workers listen and are called when the node is set to direct access."""
    peer = session.conn.get_extra_info("peername")
    if not peer:
        raise WorkerStartFailed(f"no address known for node {session.target.name}")
    return str(peer[0])


def draining_error(live: LiveWorker) -> WorkerDraining:
    return WorkerDraining(
        f"worker {live.worker_id} ({live.model_ref} on {live.node}) is shutting down; "
        "retry once it has stopped",
        worker_id=live.worker_id,
    )
