"""A relay that does nothing but copy bytes: the floor for any Python process
placed between a client and a worker (uvloop, one protocol per side, no HTTP
parsing, no auth, no routing). `bench.relay` runs it as a path of its own, so
the queen's addition can be read against what one more hop costs on the same
machine in the same run.

    python -m bench.byte_relay LISTEN_PORT TARGET_PORT
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

import uvloop


class _Side(asyncio.Protocol):
    """One socket; what it reads goes out on its peer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.pending.append(data)  # the upstream connect is still under way

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def main(listen: int, target: int) -> None:
    loop = asyncio.get_running_loop()
    connecting: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak references

    def accepted() -> _Side:
        client = _Side()

        async def connect() -> None:
            _, upstream = await loop.create_connection(_Side, "127.0.0.1", target)
            upstream.peer, client.peer = client, upstream
            assert upstream.transport is not None and client.transport is not None
            if client.transport.is_closing():  # the client left while this connected
                upstream.transport.close()
                return
            for chunk in client.pending:
                upstream.transport.write(chunk)
            client.pending.clear()

        task = loop.create_task(connect())
        connecting.add(task)
        task.add_done_callback(connecting.discard)
        return client

    server = await loop.create_server(accepted, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), int(sys.argv[2])))
