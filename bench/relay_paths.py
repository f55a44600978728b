"""The paths bench.relay measures, by name, each a call that sends one
streamed request and times it; and the base each path's ratios use.

The paths: the bench's own worker (straight, through the SSH forward, through
each byte relay), the queen's two routes on each of its two nodes, and each
of the queen's own workers called straight, on its own port with its own
token. A queen path is compared with its own worker called straight: worker
processes decode at different speeds from run to run (a millisecond or two
per 64 tokens here), and against another process's worker that difference
would be counted as the relay's."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial
from itertools import count
from pathlib import Path
from typing import Any, Protocol

import httpx

from bench.sse_client import Sample, SseClient, Tally
from tests.plugins.sshd import SshServer

CONCURRENCY = 8
DIRECT = "worker direct"
CHAT_BASE = "worker direct, messages"
PROMPT = "Once upon a time"
MESSAGES = [{"role": "user", "content": PROMPT}]
BENCH_WORKER_TOKEN = "bench-token-0123456789"  # bench/relay_procs.py's spawn_worker
# A Sample (bench/sse_client.py): seconds to first token, seconds to end,
# tokens, the worker's decode time (ms), seconds to the last token (where a
# relay's cost during the stream and at its end part ways).
CLIENTS = ("lean", "httpx")  # what times the requests: SseClient, or httpx as before


class Client(Protocol):
    def stream(self, path: str, body: dict[str, Any]) -> Sample: ...


@dataclass(frozen=True)
class QueenNode:
    """One of the queen's nodes, the model it serves there, and the names of
    its paths: the queen's (`queen /v2/tasks<suffix>`) and its worker's."""

    name: str
    access: str  # the node's worker_access
    model: str
    suffix: str
    worker: str

    @property
    def tasks(self) -> str:
        return f"queen /v2/tasks{self.suffix}"

    @property
    def chat(self) -> str:
        return f"queen /v1/chat/completions{self.suffix}"

    @property
    def own(self) -> str:
        return f"{self.worker}, direct"

    @property
    def own_chat(self) -> str:
        return f"{self.worker}, direct, messages"


# One sshd, two nodes: the queen forwards to "bench"'s worker and calls
# "bench-direct"'s on the node's address (loopback here).
NODES = (
    QueenNode("bench", "ssh", "tiny", "", "ssh node's worker"),
    QueenNode("bench-direct", "direct", "tiny-direct", ", direct", "direct node's worker"),
)
# A queen path's base is its own worker sent the same request (the chat route:
# the same messages; the worker renders the chat template, which a prompt does
# not pay for); a messages path on a worker is compared with the bench's
# worker sent the messages; every other path with the bench's worker direct.
BASES = {
    **{n.tasks: n.own for n in NODES},
    **{n.chat: n.own_chat for n in NODES},
    **{n.own_chat: CHAT_BASE for n in NODES},
}


def base_of(name: str) -> str:
    return BASES.get(name, DIRECT)


class HttpxClient:
    """The same requests through httpx, as the bench timed them before SseClient."""

    def __init__(self, port: int, token: str, limits: httpx.Limits) -> None:
        auth = {"Authorization": f"Bearer {token}"}
        url = f"http://127.0.0.1:{port}"
        self.client = httpx.Client(base_url=url, headers=auth, limits=limits, timeout=300)

    def stream(self, path: str, body: dict[str, Any]) -> Sample:
        """One streamed request; its events read as SseClient's."""
        tally = Tally()
        with self.client.stream("POST", path, json=body) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                tally.line(line)
        return tally.sample()


@dataclass(frozen=True)
class Ports:
    """Where the bench's worker is reached without the queen: its own port,
    the SSH forward's, and each byte relay's (Python's, then socat's where
    installed)."""

    worker: int
    forwarded: int
    relays: list[int]


@dataclass(frozen=True)
class QueenWorker:
    """One of the queen's workers as the bench calls it straight (the node is
    this machine: its port is reached on loopback)."""

    worker_id: str
    port: int
    pid: int
    token: str = field(repr=False)


class PathMaker:
    """Makes each path's call, all with the same generation parameters."""

    def __init__(self, max_tokens: int, client: str = "lean") -> None:
        self.params = {"max_tokens": max_tokens, "temperature": 0.0}
        self.jobs = count()
        self.kind = client
        self.limits = httpx.Limits(max_connections=CONCURRENCY * 2)

    def client(self, port: int, token: str) -> Client:
        if self.kind == "httpx":
            return HttpxClient(port, token, self.limits)
        return SseClient(port, token)

    def on_worker(self, client: Client, **content: Any) -> Callable[[], Sample]:
        """A request to a worker's own API, each with a job id of its own."""
        return lambda: client.stream(
            "/v1/inference", {"job_id": f"j{next(self.jobs)}", **content, **self.params}
        )

    def bench_paths(self, ports: Ports) -> dict[str, Callable[[], Sample]]:
        direct = self.client(ports.worker, BENCH_WORKER_TOKEN)
        tunnel = self.client(ports.forwarded, BENCH_WORKER_TOKEN)
        floors = {
            f"worker via byte relay ({kind})": self.client(port, BENCH_WORKER_TOKEN)
            for kind, port in zip(("Python", "socat"), ports.relays, strict=False)
        }
        return {
            DIRECT: self.on_worker(direct, prompt=PROMPT),
            "worker via SSH forward": self.on_worker(tunnel, prompt=PROMPT),
            CHAT_BASE: self.on_worker(direct, messages=MESSAGES),
            **{label: self.on_worker(client, prompt=PROMPT) for label, client in floors.items()},
        }

    def queen_paths(self, queen_url: str, token: str) -> dict[str, Callable[[], Sample]]:
        port = httpx.URL(queen_url).port
        assert port is not None
        via_queen = self.client(port, token)
        chat_options = {"stream": True, "stream_options": {"include_usage": True}}
        paths: dict[str, Callable[[], Sample]] = {}
        for node in NODES:
            task = {"model": node.model, "prompt": PROMPT, **self.params}
            chat = {"model": node.model, "messages": MESSAGES, **self.params, **chat_options}
            paths[node.tasks] = partial(via_queen.stream, "/v2/tasks", task)
            paths[node.chat] = partial(via_queen.stream, "/v1/chat/completions", chat)
        return paths

    def own_worker_paths(
        self, node: QueenNode, worker: QueenWorker
    ) -> dict[str, Callable[[], Sample]]:
        client = self.client(worker.port, worker.token)
        return {
            node.own: self.on_worker(client, prompt=PROMPT),
            node.own_chat: self.on_worker(client, messages=MESSAGES),
        }


def build_paths(
    queen_url: str, token: str, home: Path, ports: Ports, max_tokens: int, client: str
) -> tuple[dict[str, Callable[[], Sample]], dict[str, QueenWorker]]:
    """Every path measured, by name, each called once (warm), and the queen's
    workers by node: they exist only after the warm-up (the queen starts them
    on demand). Each node's worker paths come right before its queen paths.
    `client`: one of CLIENTS, what times the requests."""
    maker = PathMaker(max_tokens, client)
    paths = maker.bench_paths(ports)
    via_queen = maker.queen_paths(queen_url, token)
    auth = {"Authorization": f"Bearer {token}"}
    for call in [*paths.values(), *via_queen.values()]:
        call()
    workers = queen_workers(queen_url, auth, home)
    for node in NODES:
        own = maker.own_worker_paths(node, workers[node.name])
        for call in own.values():
            call()
        paths |= own | {name: via_queen[name] for name in (node.tasks, node.chat)}
    return paths, workers


def queen_workers(queen_url: str, auth: dict[str, str], home: Path) -> dict[str, QueenWorker]:
    """The queen's one worker on each node, from its list, with its token."""
    with httpx.Client(base_url=queen_url, headers=auth) as c:
        listed = c.get("/v2/workers/list").json()["workers"]
    tokens = worker_tokens(home / "queen.db")
    found = {}
    for node in NODES:
        on_node = [w for w in listed if w["node"] == node.name]
        if len(on_node) != 1 or on_node[0]["worker_id"] not in tokens:
            ids = [w["worker_id"] for w in on_node]
            raise SystemExit(f"node {node.name}: want one worker with a token, found {ids}")
        w = on_node[0]
        found[node.name] = QueenWorker(w["worker_id"], w["port"], w["pid"], tokens[w["worker_id"]])
    return found


def worker_tokens(db: Path) -> dict[str, str]:
    """Each worker's bearer token, from the queen's database, opened read
    only (the queen keeps writing it)."""
    with closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as conn:
        return dict(conn.execute("SELECT worker_id, token FROM worker_tokens"))


def add_nodes_and_models(
    queen_url: str,
    auth: dict[str, str],
    sshd: SshServer,
    root: Path,
    model: Path,
    python: Path | None,
) -> None:
    with httpx.Client(base_url=queen_url, headers=auth, timeout=60) as c:
        for node in NODES:
            body = sshd.node_body(node.name, root / "install", accept_new_host_key=True)
            body["worker_access"] = node.access
            if python is not None:
                body["worker_python"] = str(python)
            c.post("/v2/registry/beehives/add", json=body).raise_for_status()
        for node in NODES:
            entry = {"name": node.model, "model_ref": f"file:{model}", "nodes": [node.name]}
            c.post("/v2/registry/models/add", json={**entry, "slots": CONCURRENCY})
