"""A stand-in for the queen's HTTP surface, for tests of rbee-keeper's commands.

The stand-in is a real Starlette app served by uvicorn on a loopback port, with
canned data; it records every request so tests can also assert what the keeper
did not send. Also here: the keeper as a real process, and reading its pipes.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

Step = dict[str, Any] | threading.Event

NODE_GPU1 = {
    "node_name": "gpu1",
    "ssh_host": "10.0.0.5",
    "ssh_port": 22,
    "ssh_user": "alice",
    "ssh_key_path": "/home/alice/.ssh/id_ed25519",
    "install_path": "~/.rbee",
    "worker_python": None,
    "status": "reachable",
    "last_connected": "2025-10-19T12:00:00+00:00",
    "last_error": None,
    "backends": ["cuda", "cpu"],
    "devices": {"cuda": 2, "cpu": 1},
}
WORKER_1 = {
    "worker_id": "w-1",
    "node": "gpu1",
    "state": "idle",
    "model_ref": "file:/models/tiny",
    "backend": "cuda",
    "device": 0,
    "pid": 4242,
    "port": 8081,
    "started_at": "2025-10-19T12:01:00+00:00",
}


def tokens_then_end(*pieces: str) -> list[Step]:
    steps: list[Step] = [{"type": "started", "job_id": "job-1", "model": "file:/models/tiny"}]
    steps += [{"type": "token", "t": piece, "i": i} for i, piece in enumerate(pieces)]
    end = {"type": "end", "tokens_out": len(pieces), "decode_time_ms": 50, "stop_reason": "EOS"}
    return [*steps, end]


@dataclass
class StandinQueen:
    url: str = ""
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    nodes: dict[str, dict[str, Any]] = field(default_factory=lambda: {"gpu1": dict(NODE_GPU1)})
    workers: dict[str, dict[str, Any]] = field(default_factory=lambda: {"w-1": dict(WORKER_1)})
    stream: list[Step] = field(default_factory=lambda: tokens_then_end("Hello", ",", " world"))
    busy_answers: int = 0  # how many tasks are refused with ALL_SLOTS_BUSY first
    send_done: bool = True  # False: the stream just stops, as when the queen dies
    sent: list[dict[str, Any]] = field(default_factory=list)  # events the stream has sent
    stream_abandoned: threading.Event = field(default_factory=threading.Event)

    def paths(self) -> list[str]:
        return [path for _, path, _ in self.requests]


def error(status: int, code: str, message: str) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": {}, "correlation_id": "c-1"}}
    return JSONResponse(body, status_code=status)


def standin_app(queen: StandinQueen) -> Starlette:
    routes = [*_node_routes(queen), *_worker_routes(queen), _task_route(queen)]
    return Starlette(routes=routes)


async def _recorded(queen: StandinQueen, request: Request) -> Any:
    body = await request.json() if request.method == "POST" else None
    queen.requests.append((request.method, request.url.path, body))
    return body


def _node_routes(queen: StandinQueen) -> list[Route]:
    async def health(request: Request) -> Response:
        await _recorded(queen, request)
        return JSONResponse({"status": "ok", "version": "0.1.0"})

    async def add_node(request: Request) -> Response:
        body = await _recorded(queen, request)
        if body["node_name"] in queen.nodes:
            return error(409, "NODE_ALREADY_EXISTS", f"node {body['node_name']} already exists")
        node = {**body, "status": "reachable", "last_connected": None, "last_error": None}
        node |= {"backends": ["cpu"], "devices": {"cpu": 1, "cuda": 0}}
        node.pop("accept_new_host_key")
        queen.nodes[body["node_name"]] = node
        return JSONResponse({"node": node}, status_code=201)

    async def list_nodes(request: Request) -> Response:
        await _recorded(queen, request)
        return JSONResponse({"nodes": list(queen.nodes.values())})

    async def remove_node(request: Request) -> Response:
        name = (await _recorded(queen, request))["node_name"]
        if queen.nodes.pop(name, None) is None:
            return error(404, "NODE_NOT_FOUND", f"no node named {name}")
        return JSONResponse({"removed": name})

    return [
        Route("/health", health),
        Route("/v2/registry/beehives/add", add_node, methods=["POST"]),
        Route("/v2/registry/beehives/list", list_nodes),
        Route("/v2/registry/beehives/remove", remove_node, methods=["POST"]),
    ]


def _worker_routes(queen: StandinQueen) -> list[Route]:
    async def list_workers(request: Request) -> Response:
        await _recorded(queen, request)
        return JSONResponse({"workers": list(queen.workers.values())})

    async def shutdown_worker(request: Request) -> Response:
        worker_id = (await _recorded(queen, request))["worker_id"]
        if queen.workers.pop(worker_id, None) is None:
            return error(404, "WORKER_NOT_FOUND", f"no worker {worker_id}")
        return JSONResponse({"worker_id": worker_id, "stopped": True, "forced": False})

    return [
        Route("/v2/workers/list", list_workers),
        Route("/v2/workers/shutdown", shutdown_worker, methods=["POST"]),
    ]


def _task_route(queen: StandinQueen) -> Route:
    async def tasks(request: Request) -> Response:
        body = await _recorded(queen, request)
        if body.get("node", "gpu1") not in queen.nodes:
            return error(404, "NODE_NOT_FOUND", f"no node named {body['node']}")
        if queen.busy_answers > 0:
            queen.busy_answers -= 1
            return error(503, "ALL_SLOTS_BUSY", "all slots on gpu1 are busy")
        return StreamingResponse(_event_stream(queen), media_type="text/event-stream")

    return Route("/v2/tasks", tasks, methods=["POST"])


async def _event_stream(queen: StandinQueen) -> AsyncIterator[str]:
    finished = False
    try:
        for step in queen.stream:
            if isinstance(step, threading.Event):
                await wait_for(step)
            else:
                queen.sent.append(step)
                yield f"data: {json.dumps(step)}\n\n"
        if queen.send_done:
            yield "data: [DONE]\n\n"
        finished = True
    finally:
        if not finished:  # cancelled: the keeper went away mid-stream
            queen.stream_abandoned.set()


async def wait_for(event: threading.Event, timeout_s: float = 10.0) -> None:
    """Poll: the test sets this event from its own thread, outside the server's loop."""
    deadline = time.monotonic() + timeout_s
    while not event.is_set() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)


@contextmanager
def running_standin() -> Iterator[StandinQueen]:
    """The stand-in queen served on a free loopback port while the block runs;
    each test module's `queen` fixture is one."""
    state = StandinQueen()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    state.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(
        standin_app(state), log_level="warning", lifespan="off", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "the stand-in queen did not start"
    try:
        yield state
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def keeper(*argv: str, env: dict[str, str] | None = None, **popen: Any) -> subprocess.Popen[bytes]:
    """rbee-keeper as a real process (stdout and stderr piped).

    Without PYTHONUNBUFFERED, as users run it: then only the keeper's own flushes
    make tokens show up while the stream is still going.
    """
    environment = {**os.environ, **(env or {})}
    environment.pop("PYTHONUNBUFFERED", None)
    return subprocess.Popen(
        [sys.executable, "-m", "rbee_keeper", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment,
        preexec_fn=ctrl_c_as_at_a_terminal,
        **popen,
    )


def ctrl_c_as_at_a_terminal() -> None:
    """Give the child SIGINT's default disposition, so that Python turns it into
    KeyboardInterrupt as it does at a terminal: a suite started in the
    background by a non-interactive shell inherits SIGINT ignored, and a Python
    started with SIGINT ignored never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def read_until(stream: Any, wanted: bytes, timeout_s: float = 10.0) -> bytes:
    """Read a pipe until `wanted` shows up; fail the test if it does not in time."""
    seen = b""
    deadline = time.monotonic() + timeout_s
    while wanted not in seen:
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([stream], [], [], max(remaining, 0))
        assert ready, f"no {wanted!r} within {timeout_s} s; got {seen!r}"
        chunk = os.read(stream.fileno(), 4096)
        assert chunk, f"stream closed before {wanted!r}; got {seen!r}"
        seen += chunk
    return seen


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ["), stderr
    return lines[0]
