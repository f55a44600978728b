"""Two real queen processes on one database.

On a real PostgreSQL server, with the loopback sshd as the node and the tiny
model: a stream runs through queen A, A is killed with SIGKILL mid-stream,
the client retries against queen B, which takes the node's lease over once
it lapses, re-adopts the running worker and serves; one worker process all
along, the workers table agreeing, none left once B stops.

On one SQLite file (the cheap setup, on one host): both queens serve the same
inventory and catalog, and a catalog change made through one reaches the
other's remembered lookups.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from rbee_queen.nodes.lease import default_queen_id
from tests.lifecycle_support import Streaming, add_node, all_workers, wait_for, workers
from tests.plugins.postgres import PostgresDatabase
from tests.plugins.procs import worker_pids
from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.plugins.queen_events import Subscriber
from tests.plugins.sshd import SshServer

# Leases short enough for a test: B takes a dead A's node within 2 s.
FAST_LEASES = {"RBEE_LEASE_TTL": "2", "RBEE_LEASE_RENEW": "0.5", "RBEE_HEALTH_INTERVAL": "0"}


@pytest.fixture
def two_homes(rbee_home: Path, tmp_path: Path) -> tuple[Path, Path]:
    other = tmp_path / "home-b"
    other.mkdir()
    return rbee_home, other


def second_queen(first: QueenProcess, home: Path) -> QueenProcess:
    """Queen B, trusting the node host keys queen A recorded (deployment.md)."""
    shutil.copy(first.home / "known_hosts", home / "known_hosts")
    return start_queen(home)


def served_after_retries(queen: QueenProcess, model: Path, timeout: float = 30.0) -> list[Any]:
    """What a client does when its queen died: retry against the other until
    it is served; NODE_HELD_ELSEWHERE until the dead queen's lease lapses."""
    deadline = time.monotonic() + timeout
    task = {"node": "n1", "model": f"file:{model}", "prompt": "hello", "max_tokens": 3}
    while True:
        with queen.client() as c:
            r = c.post("/v2/tasks", json=task)
        if r.status_code == 200:
            return [line for line in r.text.splitlines() if line.startswith("data: {")]
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "NODE_HELD_ELSEWHERE", r.text
        assert time.monotonic() < deadline, "never served by the second queen"
        time.sleep(0.2)


class KilledStream(Streaming):
    """A long stream whose queen is killed under it: the cut is what it records."""

    cut: httpx.HTTPError | None = None

    def _run(self, *args: Any) -> None:
        try:
            super()._run(*args)
        except httpx.HTTPError as exc:  # the queen's connection went down mid-stream
            self.cut = exc
            self.ended_at = time.monotonic()


def lease_holder(database: PostgresDatabase) -> str:
    server = database.server
    with psycopg.connect(
        host=str(server.root), port=server.port, user="rbee", dbname=database.url.dbname
    ) as conn:
        row = conn.execute("SELECT holder FROM node_leases WHERE node = 'n1'").fetchone()
    assert row is not None
    return str(row[0])


def refused(queen: QueenProcess, model: Path, holder: str) -> None:
    """The queen starts nothing on a node the other one holds, and says who does."""
    with queen.client() as c:
        r = c.post("/v2/tasks", json={"node": "n1", "model": f"file:{model}", "prompt": "hi"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "NODE_HELD_ELSEWHERE", r.text
    assert r.json()["error"]["details"]["holder"] == holder
    # When the holder's lease would lapse unrenewed, and one renewal more.
    assert 1 <= int(r.headers["Retry-After"]) <= 3


def only_worker(queen: QueenProcess, worker: dict[str, Any], install: Path) -> None:
    """`worker` is the one process on the node, and the one live row, and the
    queen reaches it (a forward of its own)."""
    assert worker_pids(under=str(install)) == [worker["pid"]]
    (listed,) = workers(queen)
    assert (listed["worker_id"], listed["pid"]) == (worker["worker_id"], worker["pid"])
    assert listed["url"]
    live_rows = [w for w in all_workers(queen) if w["state"] != "stopped"]
    assert [w["worker_id"] for w in live_rows] == [worker["worker_id"]]


def stall_and_take_over(stalled: QueenProcess, taker: QueenProcess, model: Path) -> None:
    """The holder stops (SIGSTOP) past its lease's ttl: the other queen takes
    the node over and serves; then the stalled one runs on."""
    os.kill(stalled.proc.pid, signal.SIGSTOP)
    try:
        served_after_retries(taker, model)
    finally:
        os.kill(stalled.proc.pid, signal.SIGCONT)


def test_a_queen_killed_mid_stream_leaves_its_node_to_the_other(
    two_homes: tuple[Path, Path],
    postgres_database: PostgresDatabase,
    sshd: SshServer,
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RBEE_DATABASE", str(postgres_database.url))
    monkeypatch.setenv("RBEE_DATABASE_PASSWORD_FILE", str(postgres_database.password_file))
    for name, value in FAST_LEASES.items():
        monkeypatch.setenv(name, value)
    (home_a, home_b), install = two_homes, tmp_path / "install"
    id_a, id_b = default_queen_id(home_a), default_queen_id(home_b)
    a = start_queen(home_a)
    b: QueenProcess | None = None
    try:
        add_node(a, sshd, tmp_path)
        stream = KilledStream(a, tiny_model_dir, max_tokens=2048, temperature=0)
        b = second_queen(a, home_b)  # starting while the worker loads
        events_b = Subscriber(b)
        events_b.start()
        assert stream.first_token.wait(60)
        (worker,) = workers(a)
        assert lease_holder(postgres_database) == id_a
        refused(b, tiny_model_dir, holder=id_a)

        a.proc.kill()  # SIGKILL, mid-stream
        a.proc.wait()
        stream.join(30)
        assert isinstance(stream.cut, httpx.HTTPError)  # cut mid-stream, not finished
        assert stream.events[-1]["type"] == "token"

        events = served_after_retries(b, tiny_model_dir)
        assert '"type": "end"' in events[-1] or '"type":"end"' in events[-1]
        assert lease_holder(postgres_database) == id_b
        only_worker(b, worker, install)  # adopted by B: none doubled, none orphaned
        taken = events_b.wait_for(lambda e: e["type"] == "node_takeover")
        assert [taken[k] for k in ("queen", "nodes", "adopted", "cleaned")] == [id_b, ["n1"], 1, 0]

        # A again (the same id): it takes nothing from B and adopts or cleans
        # up none of B's workers, until B stalls past its lease.
        stop_queen(a)
        a = start_queen(home_a)
        refused(a, tiny_model_dir, holder=id_b)
        only_worker(b, worker, install)
        stall_and_take_over(b, a, tiny_model_dir)
        refused(b, tiny_model_dir, holder=id_a)  # B, resumed, lets the node go
        wait_for(lambda: workers(b)[0]["url"] is None)  # its forward closed, nothing stopped
        stop_queen(b)  # and its clean stop leaves A's worker running
        only_worker(a, worker, install)
    finally:
        stop_queen(a)
        if b is not None:
            stop_queen(b)
    assert worker_pids(under=str(install)) == []  # B stopped what it drove


@pytest.fixture
def sqlite_pair(
    two_homes: tuple[Path, Path], sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[QueenProcess, QueenProcess]]:
    monkeypatch.setenv("RBEE_DATABASE", str(tmp_path / "shared.db"))
    for name, value in {**FAST_LEASES, "RBEE_HEALTH_INTERVAL": "0.3"}.items():
        monkeypatch.setenv(name, value)
    a = start_queen(two_homes[0])
    try:
        add_node(a, sshd, tmp_path)
        b = second_queen(a, two_homes[1])
        try:
            yield a, b
        finally:
            stop_queen(b)
    finally:
        stop_queen(a)


def chat(queen: QueenProcess, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    with queen.client() as c:
        return c.post("/v1/chat/completions", json=body)


def test_two_queens_on_one_sqlite_file_share_inventory_and_catalog(
    sqlite_pair: tuple[QueenProcess, QueenProcess], tiny_model_dir: Path
) -> None:
    a, b = sqlite_pair
    # The queen a node is added through takes its lease there and then.
    shared = sqlite3.connect(a.home.parent / "shared.db")
    holders = shared.execute("SELECT node, holder FROM node_leases").fetchall()
    shared.close()
    assert holders == [("n1", default_queen_id(a.home))]
    with b.client() as c:
        nodes = c.get("/v2/registry/beehives/list").json()["nodes"]
        assert [n["node_name"] for n in nodes] == ["n1"]
    with a.client() as c:
        body = {"name": "tiny", "model_ref": f"file:{tiny_model_dir}", "nodes": ["n1"]}
        assert c.post("/v2/registry/models/add", json=body).status_code == 201
    with b.client() as c:
        assert [m["id"] for m in c.get("/v1/models").json()["data"]] == ["tiny"]
    # B looks the model up (and remembers it); A holds its node, so B refuses.
    refused = chat(b, "tiny")
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "node_held_elsewhere"  # OpenAI's shape
    assert 1 <= int(refused.headers["Retry-After"]) <= 3  # which OpenAI's clients honour
    with a.client() as c:
        assert c.post("/v2/registry/models/remove", json={"name": "tiny"}).status_code == 200
    with b.client() as c:  # nor writes to the node's model store
        r = c.post("/v2/models/remove", json={"node": "n1", "model": "hf:org/model"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "NODE_HELD_ELSEWHERE", r.text
    # B forgets what it remembered of the catalog within a second.
    wait_for(lambda: chat(b, "tiny").status_code == 404, timeout=10)
    assert workers(a) == [] and workers(b) == []
    # Only the lease's holder checks the node: B's health loop, running all
    # along, never opened an SSH connection; the status it lists is A's.
    assert "Opening SSH connection" in a.log
    assert "Opening SSH connection" not in b.log
    with b.client() as c:
        assert c.get("/v2/registry/beehives/list").json()["nodes"][0]["status"] == "reachable"
