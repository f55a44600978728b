"""Per-hop timestamps for `bench.relay --trace`: where a request's first token
and its end spend their time between the client, the queen and the worker.

Nothing here is in the queen or the worker: `bench.relay --trace` starts the
queen, and the worker's python on its nodes, as `python -m bench.hop_trace
ROLE ...`, which wraps a few methods of uvicorn's protocol and of the queen's
worker connection with a timestamp, then runs the real module. Every process
stamps CLOCK_MONOTONIC (`time.perf_counter`), one clock for all of them, and
appends `role event seconds` lines to the file named by BENCH_HOP_LOG; the
bench stamps its client the same way, and `report` matches each request's
stamps by the client's start and end.

    python -m bench.hop_trace queen --port N    (runs rbee_queen)
    python -m bench.hop_trace worker ARGS...     (runs rbee_worker)
"""

from __future__ import annotations

import os
import runpy
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

LOG_ENV = "BENCH_HOP_LOG"
TOKEN = b'"type": "token"'
END = b'"type": "end"'
# The hops of a first token and of an end, each from one stamp to the next.
FIRST_TOKEN_HOPS = (
    ("c.start", "q.req_in", "client -> queen's uvicorn has the request"),
    ("q.req_in", "q.req_out", "queen: request in -> request written to the worker"),
    ("q.req_out", "w.req_in", "-> worker's uvicorn has it"),
    ("w.req_in", "w.tok_made", "worker: request in -> first token made"),
    ("w.tok_made", "w.tok_loop", "worker: first token made -> its event loop has it"),
    ("w.tok_loop", "w.tok_out", "worker: event loop has it -> written"),
    ("w.tok_out", "q.tok_in", "-> queen has it"),
    ("q.tok_in", "q.tok_seen", "queen: first token in -> the failover has seen it"),
    ("q.tok_seen", "q.tok_out", "queen: -> the first token is sent"),
    ("q.tok_out", "c.tok_in", "-> client has it"),
    # Not on the first token's path: the head leaves once the worker accepted
    # the request, while it prefills.
    ("q.req_out", "q.head_out", "(aside) queen: request written -> its head sent"),
)
DIRECT_HOPS = (
    ("c.start", "w.req_in", "client -> worker's uvicorn has the request"),
    ("w.req_in", "w.tok_made", "worker: request in -> first token made"),
    ("w.tok_made", "w.tok_loop", "worker: first token made -> its event loop has it"),
    ("w.tok_loop", "w.tok_out", "worker: event loop has it -> written"),
    ("w.tok_out", "c.tok_in", "-> client has it"),
    ("w.end_out", "c.end", "worker writes `end` -> client has the whole response"),
)
END_HOPS = (
    ("w.end_out", "q.end_in", "worker writes `end` -> queen has it"),
    ("q.end_in", "q.end_out", "queen: `end` in -> written"),
    ("q.end_out", "q.fin", "queen: `end` written -> response's last bytes"),
    ("q.fin", "c.end", "-> client has the whole response"),
)


class Stamps:
    """Appends `role event seconds` lines; one write each, so a process killed
    mid-run loses nothing it stamped."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.fd = os.open(os.environ[LOG_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def __call__(self, event: str, at: float | None = None) -> None:
        now = time.perf_counter() if at is None else at
        os.write(self.fd, f"{self.role} {event} {now:.9f}\n".encode())


def _wrap_http(stamp: Stamps, protocol: Any, cycle: Any) -> None:
    """A request's first bytes in, and what its response writes."""
    received = protocol.data_received

    def data_received(self: Any, data: bytes) -> None:
        if data.startswith(b"POST "):
            stamp("req_in")
        received(self, data)

    protocol.data_received = data_received
    send = cycle.send

    async def traced_send(self: Any, message: dict[str, Any]) -> None:
        body = message.get("body", b"")
        if message["type"] == "http.response.start":
            stamp("head_out")
        if message["type"] == "http.response.body":
            seen = getattr(self, "_hop_seen", False)
            if body and not seen and (TOKEN in body or b'"choices"' in body):
                self._hop_seen = True
                stamp("tok_out")
            if END in body or b"[DONE]" in body:
                stamp("end_out")
        await send(self, message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            stamp("fin")

    cycle.send = traced_send


def _wrap_worker_connection(stamp: Stamps) -> None:
    """The queen's side of the worker hop: the request written, the first
    token and the `end` event read."""
    from rbee_queen.fleet.worker_stream import Connection

    send, received = Connection.send, Connection.data_received

    def traced_send(self: Any, request: bytes) -> None:
        stamp("req_out")
        self._hop_seen = False
        send(self, request)

    def data_received(self: Any, data: bytes, datatype: object = None) -> None:
        if not getattr(self, "_hop_seen", True) and TOKEN in data:
            self._hop_seen = True
            stamp("tok_in")
        if END in data:
            stamp("end_in")
        received(self, data, datatype)

    Connection.send = traced_send  # type: ignore[method-assign]
    Connection.data_received = data_received  # type: ignore[method-assign]
    from rbee_queen.workers import failover

    wait_first = failover.first_token

    async def first_token(response: Any) -> None:
        await wait_first(response)
        stamp("tok_seen")

    failover.first_token = first_token


def _wrap_token_events(stamp: Stamps) -> None:
    """The worker's first token of each job, made (in its generation thread)."""
    from rbee_worker import events

    make: Callable[[str, int], bytes] = events.token

    def token(text: str, index: int) -> bytes:
        if index == 0:
            stamp("tok_made")
        return make(text, index)

    events.token = token
    from rbee_worker.streaming import JobStream

    produce = JobStream.events

    async def traced_events(self: Any) -> Any:
        seen = False
        async for piece in produce(self):
            if not seen and TOKEN in piece:
                seen = True
                stamp("tok_loop")
            yield piece

    JobStream.events = traced_events  # type: ignore[method-assign]


def run(role: str, argv: list[str]) -> None:
    from uvicorn.protocols.http import httptools_impl

    stamp = Stamps(role[0])
    protocol, cycle = httptools_impl.HttpToolsProtocol, httptools_impl.RequestResponseCycle
    if role == "queen":
        from rbee_queen.api.http_limits import LimitedHttpProtocol

        _wrap_http(stamp, LimitedHttpProtocol, cycle)
        _wrap_worker_connection(stamp)
        module = "rbee_queen"
    else:
        _wrap_http(stamp, protocol, cycle)
        _wrap_token_events(stamp)
        module = "rbee_worker"
    sys.argv = [module, *argv]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def worker_python(root: Path, checkout: Path, log: Path) -> Path:
    """An executable a node runs as its worker python: `-m rbee_worker` runs
    the worker traced (sshd passes no environment on: the log's name is
    written in), anything else (the helper's checks) plain python."""
    path = root / "traced-python"
    path.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-m" ] && [ "$2" = "rbee_worker" ]; then shift 2\n'
        f'  export PYTHONPATH="${{PYTHONPATH}}:{checkout}" {LOG_ENV}="{log}"\n'
        f'  exec {sys.executable} -m bench.hop_trace worker "$@"\n'
        "fi\n"
        f'exec {sys.executable} "$@"\n'
    )
    path.chmod(0o755)
    return path


def traced_rounds(paths: Mapping[str, Callable[[], Sequence[float]]], runs: int, log: Path) -> None:
    """`runs` rounds of every path in a seeded order, as bench.relay's
    interleaved part, the client's stamps added; then the report."""
    import random

    windows: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    order = random.Random(0)
    os.environ[LOG_ENV] = str(log)
    stamp = Stamps("c")
    for _ in range(runs):
        names = list(paths)
        order.shuffle(names)
        for name in names:
            started = time.perf_counter()
            sample = paths[name]()  # (first token, end, ...) from its own start
            stamp("start", started)
            stamp("tok_in", started + sample[0])
            stamp("end", started + sample[1])
            windows[name].append((started, started + sample[1]))
    report(log, windows)


def report(log: Path, windows: dict[str, list[tuple[float, float]]]) -> None:
    """The median of each hop per path, over the requests of that path."""
    stamps = sorted(
        (float(t), f"{role}.{event}")
        for role, event, t in (line.split() for line in log.read_text().splitlines())
    )
    for path, spans in windows.items():
        direct = not path.startswith("queen")
        per_hop: dict[str, list[float]] = {}
        for start, end in spans:
            seen = {name: t for t, name in reversed(stamps) if start <= t <= end + 0.05}
            hops = DIRECT_HOPS if direct else FIRST_TOKEN_HOPS + END_HOPS
            for a, b, label in hops:
                if a in seen and b in seen:
                    per_hop.setdefault(label, []).append((seen[b] - seen[a]) * 1e6)
        print(f"\n{path} ({len(spans)} requests), median us per hop:")
        for label, values in per_hop.items():
            print(f"  {label:56s} {statistics.median(values):8.0f}")


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2:])
