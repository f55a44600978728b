"""What one request's round trip to a worker behind sshd costs the queen's
side, against plain TCP: a small request (an inference's size) written, a
small answer read back, to a stand-in worker (a process of its own that
answers each write at once), through a loopback sshd started here:

- plain TCP, the direct node's way;
- an asyncssh direct-tcpip channel as asyncssh sends it, an empty
  SSH_MSG_IGNORE before every packet;
- the same channel as the queen sends it (rbee_queen/fleet/ssh_ignore.py).

    .venv/bin/python -m bench.ssh_hop [--requests 300]

The paths take turns, each request warm (right after the last) and cold (the
CPU's caches evicted first, as bench.asgi_stack does), with the time the
write call itself took. Pinned as bench.relay pins by default: the stand-in
worker on CPU 0, this process and sshd on the other CPUs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncssh

from bench.asgi_stack import Evictor, run_on_queens_loop
from rbee_queen.fleet.session import ENCRYPTION_ALGS
from rbee_queen.fleet.ssh_ignore import without_empty_ignores
from tests.plugins.sshd import SshServer, free_port, start_sshd

BODY = b'{"job_id": "job-0123456789abcdef", "prompt": "Once upon a time", "max_tokens": 64}'
REQUEST = (
    b"POST /v1/inference HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
    b"authorization: Bearer " + b"t" * 43 + b"\r\ncontent-length: %d\r\n\r\n" % len(BODY) + BODY
)
WORKER = """
import asyncio, os, sys
if len(os.sched_getaffinity(0)) > 1:
    os.sched_setaffinity(0, {0})
class Answer(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
    def data_received(self, data):
        self.transport.write(b"HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\n\\r\\nok")
async def main():
    server = await asyncio.get_running_loop().create_server(Answer, "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


class Client(asyncio.Protocol):
    """The queen's end: an asyncio protocol and an asyncssh session alike."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.answered: asyncio.Future[float] | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def session_started(self) -> None:
        pass

    def data_received(self, data: bytes, datatype: object = None) -> None:
        if self.answered is not None and not self.answered.done():
            self.answered.set_result(time.perf_counter())

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        pass

    async def round_trip(self) -> tuple[float, float]:
        """Microseconds to the answer, and in the write call."""
        self.answered = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        self.transport.write(REQUEST)
        written = time.perf_counter()
        answered = await self.answered
        return (answered - started) * 1e6, (written - started) * 1e6


async def measure(sshd: SshServer, port: int, requests: int) -> None:
    loop = asyncio.get_running_loop()
    transport, tcp = await loop.create_connection(Client, "127.0.0.1", port)
    transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    paths: dict[str, Client] = {"plain TCP (a direct node)": tcp}
    conns: list[asyncssh.SSHClientConnection] = []
    try:
        for name, strip in (("asyncssh's channel, its ignores", False), ("the queen's", True)):
            conn = await sshd.connect(list(ENCRYPTION_ALGS))
            conns.append(without_empty_ignores(conn) if strip else conn)
            _, paths[name] = await conn.create_connection(Client, "127.0.0.1", port)
        await report(paths, requests, Evictor())
    finally:
        transport.close()
        for conn in conns:
            conn.close()


async def report(paths: dict[str, Client], requests: int, evict: Evictor) -> None:
    took = {name: {"warm": [], "cold": [], "write": []} for name in paths}
    for _ in range(requests):
        for name, client in paths.items():
            await asyncio.sleep(0.002)  # every process idle, as between two requests
            took[name]["warm"].append((await client.round_trip())[0])
            evict()
            await asyncio.sleep(0.002)
            cold, write = await client.round_trip()
            took[name]["cold"].append(cold)
            took[name]["write"].append(write)
    print(f"{requests} round trips each, median us (cold: caches evicted first):")
    for name, got in took.items():
        warm, cold, write = (statistics.median(got[k]) for k in ("warm", "cold", "write"))
        print(f"  {name:34s} warm {warm:6.1f}  cold {cold:6.1f}  the write call, cold {write:5.1f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="rbee-sshhop-"))
    if len(os.sched_getaffinity(0)) > 1:  # sshd, started next, inherits it
        os.sched_setaffinity(0, os.sched_getaffinity(0) - {0})
    sshd_proc, sshd = start_sshd(root / "sshd")
    port = free_port()
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        run_on_queens_loop(measure(sshd, port, args.requests))
    finally:
        worker.kill()
        sshd_proc.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
