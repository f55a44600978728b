"""What the queen's ASGI stack itself costs a request, warm and in one process:
its front (rbee_queen/api/front.py: timing, correlation id and deadline,
bearer auth with the real key ring, audit log, metrics and SQLite store in a
temp home) serving an endpoint that reads a small JSON body and answers at
/v2/tasks, as the queen serves that route (past the router), against that
endpoint called alone. No sockets, no other process: the instructions of the stack,
not the queen waking on a CPU it shares (which a per-hop trace includes).

    .venv/bin/python -m bench.asgi_stack [--requests 5000] [--cold [--pauses 1,5,20]]

`--cold` also times each request after evicting the CPU's caches (one write
to every 64-byte line of a buffer larger than the last-level cache), which is
how a request finds the queen after a pause while other processes ran: the
per-hop trace of bench.relay sees the stack 4-7 times slower than warm, and so
does this, where evicting only the per-core caches (8 MiB) does not. Medians
of single requests, with and without the eviction, through the front as the
queen has it, through the front with the route left to Starlette's router and
exception middleware (as before the front served it), through Starlette's
router alone and for the endpoint alone. `--pauses` times each also after
the process slept that many milliseconds (its loop too), which is what a
request finds between two of a client's: on a virtual machine whose idle
CPU halts, a pause of 20 ms cost more than the eviction, one of 5 ms most of
it, one of 1 ms nearly nothing (`docs/benchmarks.md`).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message

from rbee_queen import deferred
from rbee_queen.api.front import Front
from rbee_queen.app import HANDLERS
from rbee_queen.audit import AuditLog
from rbee_queen.keys import KeyRing
from rbee_queen.metrics import QueenMetrics
from rbee_queen.store.db import open_database

BODY = b'{"model": "tiny", "prompt": "Once upon a time", "max_tokens": 64}'
Call = Callable[[], Awaitable[None]]


async def endpoint(request: Request) -> Response:
    await request.body()
    return Response(b"{}", media_type="application/json")


def build(home: Path, *, direct: bool = True) -> tuple[Starlette, str]:
    """The queen's front around `endpoint` at /v2/tasks (first of the routes,
    as in the queen), 40 other routes after it; with `direct`, the front
    serves /v2/tasks itself, as the queen's does."""
    routes = [Route("/v2/tasks", endpoint, methods=["POST"])]
    routes += [Route(f"/v2/other/{i}", endpoint) for i in range(40)]
    front = Middleware(
        Front, control_timeout_s=30.0, direct=routes[:1] if direct else [], handlers=HANDLERS
    )
    app = Starlette(routes=routes, middleware=[front], exception_handlers=HANDLERS)
    open_database(home / "queen.db")  # the metrics read the store at each scrape
    keys = KeyRing(home, None)
    keys.load()
    audit = AuditLog(home / "audit")
    metrics = QueenMetrics({"home": home, "audit_log": home / "audit"})
    app.state.services = SimpleNamespace(keys=keys, audit=audit, metrics=metrics)
    return app, (home / "api-token").read_text().strip()


def scope_for(token: str) -> dict[str, Any]:
    headers = [
        (b"host", b"127.0.0.1:7833"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
        (b"authorization", f"Bearer {token}".encode()),
    ]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v2/tasks",
        "raw_path": b"/v2/tasks",
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 7833),
        "headers": headers,
    }


async def receive() -> Message:
    return {"type": "http.request", "body": BODY, "more_body": False}


async def send(message: Message) -> None:
    return None


async def per_request_us(call: Call, requests: int) -> float:
    """Each call, then what it deferred (rbee_queen/deferred.py: its audit
    entry, its metrics), done and counted, and a turn of the event loop."""
    for _ in range(min(500, requests)):  # warm
        await call()
        deferred.flush()
        await asyncio.sleep(0)
    started = time.perf_counter()
    for _ in range(requests):
        await call()
        deferred.flush()
        await asyncio.sleep(0)
    return (time.perf_counter() - started) / requests * 1e6


EVICT_BYTES = 96 * 1024 * 1024  # over this machine's 32 MiB last-level cache, with room


class Evictor:
    """Pushes what the CPU caches hold out to memory: a write to every line."""

    def __init__(self) -> None:
        self.buffer = bytearray(EVICT_BYTES)
        self.lines = len(range(0, EVICT_BYTES, 64))
        self.turn = 0

    def __call__(self) -> None:
        self.turn ^= 1  # a new value each time, so each write really changes the line
        self.buffer[::64] = bytes([self.turn]) * self.lines


def pause(ms: float) -> Callable[[], None]:
    """The process asleep for `ms` (the event loop too), as the queen between
    two requests: its CPU idle or running others meanwhile."""
    return lambda: time.sleep(ms / 1000)


async def median_us(call: Call, requests: int, before: Callable[[], None] | None) -> float:
    """One call at a time, its deferred work and a loop turn outside the
    timing; with `before` (an eviction, a pause), that before each."""
    took = []
    for _ in range(requests):
        if before is not None:
            before()
        started = time.perf_counter()
        await call()
        took.append(time.perf_counter() - started)
        deferred.flush()
        await asyncio.sleep(0)
    return statistics.median(took[requests // 10 :]) * 1e6


async def cold(requests: int, pauses: list[float]) -> None:
    """Warm and cold medians of the stack, Starlette alone and the endpoint;
    and each after each of `pauses` (ms)."""
    home = Path(tempfile.mkdtemp(prefix="rbee-asgi-"))
    evict = Evictor()
    try:
        app, token = build(home)
        routed, _ = build(home, direct=False)
        routed.state.services = app.state.services
        scope = scope_for(token)
        bare = Starlette(routes=list(app.router.routes))  # the same routes, no middleware
        calls: dict[str, Call] = {
            "through the queen's front": lambda: app(dict(scope), receive, send),
            "the front, the route through the router": lambda: routed(dict(scope), receive, send),
            "Starlette's router alone": lambda: bare(dict(scope), receive, send),
            "the endpoint alone": lambda: _endpoint_alone(scope),
        }
        print(f"{requests} requests each, one at a time, median us (cold: caches evicted first):")
        for name, call in calls.items():
            warm = await median_us(call, requests, None)
            evicted = await median_us(call, requests, evict)
            line = f"  {name:42s} warm {warm:6.1f}  cold {evicted:6.1f}  x{evicted / warm:4.1f}"
            for ms in pauses:
                slept = await median_us(call, requests, pause(ms))
                line += f"  after {ms:g} ms asleep {slept:6.1f}"
            print(line)
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def _endpoint_alone(scope: dict[str, Any]) -> None:
    response = await endpoint(Request(dict(scope), receive))
    await response(scope, receive, send)


async def measure(requests: int) -> None:
    home = Path(tempfile.mkdtemp(prefix="rbee-asgi-"))
    try:
        app, token = build(home)
        scope = scope_for(token)

        async def through_the_stack() -> None:
            await app(dict(scope), receive, send)

        stack = await per_request_us(through_the_stack, requests)
        alone = await per_request_us(lambda: _endpoint_alone(scope), requests)
        audit = AuditLog(home / "audit-alone")

        async def one_entry() -> None:
            audit.record("auth.success", key="owner", method="POST", path="/v2/tasks")

        entries = await per_request_us(one_entry, requests)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(f"{requests} requests, warm, one process:")
    print(f"  through the queen's front                   {stack:7.1f} us per request")
    print(f"  the endpoint alone                          {alone:7.1f} us per request")
    print(f"  the stack's own share                       {stack - alone:7.1f} us per request")
    print(f"  one audit entry (hash chain, one write)     {entries:7.1f} us, a loop turn included")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--cold", action="store_true", help="also evict the caches per request")
    parser.add_argument(
        "--pauses", default="", help="with --cold: also after a pause of each, ms (1,5,20)"
    )
    args = parser.parse_args()
    run_on_queens_loop(measure(args.requests))
    if args.cold:
        pauses = [float(ms) for ms in args.pauses.split(",") if ms]
        run_on_queens_loop(cold(min(args.requests, 300), pauses))


def run_on_queens_loop(work: Coroutine[Any, Any, None]) -> None:
    """On the event loop the queen runs on: uvicorn's choice, uvloop where installed."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(work)
    else:
        uvloop.run(work)


if __name__ == "__main__":
    main()
