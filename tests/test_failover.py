"""Failover with real workers: a worker killed (SIGKILL) as it takes a request,
before its first token, costs the client nothing (the request goes once to
the model's other worker); a worker killed after tokens were sent ends the
stream with WORKER_DIED and the output so far, and is never retried.

Two nodes (both the loopback sshd) serve catalog model `two`, one slot each.
The worker that takes the request is frozen (SIGSTOP) first, so the kill
lands after the request reached it and before it answered.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.plugins.procs import worker_pids
from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.plugins.queen_events import Subscriber
from tests.plugins.sshd import SshServer
from tests.pressure_support import frozen_slot_of, in_thread, wait_until

TASK = {"model": "two", "prompt": "Hi", "max_tokens": 8, "temperature": 0}


@pytest.fixture
def two_workers(rbee_home: Path, sshd: SshServer, tiny_model_dir: Path) -> Iterator[QueenProcess]:
    """Model `two` on nodes a and b, a worker warm on each."""
    queen = start_queen(rbee_home)
    try:
        for name in ("a", "b"):
            queen.add_node(sshd.node_body(name, rbee_home / name, accept_new_host_key=True))
        warm_two(queen, tiny_model_dir)
        yield queen
    finally:
        stop_queen(queen)


def warm_two(queen: QueenProcess, model: Path) -> None:
    """Catalog model `two` on nodes a and b (added), a worker warm on each."""
    entry = {"name": "two", "model_ref": f"file:{model}", "nodes": ["a", "b"]}
    with queen.client() as c:
        assert c.post("/v2/registry/models/add", json=entry).status_code == 201
        assert c.post("/v2/tasks", json=TASK).status_code == 200  # starts a
        with frozen_slot_of(queen, pid_on(queen, "a"), "two"):  # a is full: b starts
            assert c.post("/v2/tasks", json=TASK).status_code == 200


def pid_on(queen: QueenProcess, node: str) -> int:
    pids = worker_pids(under=str(queen.home / node))
    assert len(pids) == 1, [Path(f"/proc/{p}/cmdline").read_bytes() for p in pids]
    return pids[0]


def sse_events(lines: Iterator[str]) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in lines if line.startswith("data: {")]


def run_task(queen: QueenProcess) -> tuple[int, list[dict[str, Any]]]:
    with queen.client() as c, c.stream("POST", "/v2/tasks", json=TASK) as r:
        return r.status_code, sse_events(r.iter_lines())


def in_flight(queen: QueenProcess) -> bool:
    with queen.client() as c:
        return "rbee_requests_in_flight 1.0" in c.get("/metrics").text


def test_a_worker_killed_as_it_takes_the_request_fails_over(two_workers: QueenProcess) -> None:
    queen = two_workers
    a, b = pid_on(queen, "a"), pid_on(queen, "b")
    watcher = Subscriber(queen)
    watcher.start()
    os.kill(a, signal.SIGSTOP)  # it takes the connection but never answers
    asking, answer = in_thread(lambda: run_task(queen))
    wait_until(lambda: in_flight(queen), "the request claimed a's slot")
    time.sleep(0.2)  # its bytes are on a's socket
    os.kill(a, signal.SIGKILL)
    asking.join(60)
    status, events = answer[0]
    assert status == 200
    assert [e["type"] for e in events][-1] == "end", events
    assert not any(e["type"] == "error" for e in events)
    job = events[0]["job_id"]
    # The watcher reads the queen's events on a connection of its own, in the
    # order published: the answer can be whole before b's events reach it.
    watcher.wait_for(
        lambda e: e["type"] == "request_finished" and e["node"] == "b" and e["job_id"] == job
    )
    started = [e for e in watcher.events if e["type"] == "request_started" and e["job_id"] == job]
    assert [e["node"] for e in started] == ["a", "b"]  # once to a, once more to b
    finished = [e for e in watcher.events if e["type"] == "request_finished" and e["job_id"] == job]
    # Each attempt on the books: the lost one, then the one that answered.
    assert [(e["node"], e["outcome"]) for e in finished][0] == ("a", "WORKER_DIED")
    assert finished[1]["node"] == "b" and finished[1]["outcome"] in ("EOS", "MAX_TOKENS")
    assert worker_pids(under=str(queen.home / "b")) == [b]


def test_a_worker_killed_after_tokens_ends_the_stream_without_a_retry(
    two_workers: QueenProcess,
) -> None:
    queen = two_workers
    a = pid_on(queen, "a")
    watcher = Subscriber(queen)
    watcher.start()
    long = {**TASK, "max_tokens": 2048}
    with queen.client() as c, c.stream("POST", "/v2/tasks", json=long) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        events: list[dict[str, Any]] = []
        for line in lines:
            events += sse_events(iter([line]))
            if events and events[-1]["type"] == "token":
                break
        os.kill(a, signal.SIGKILL)
        events += sse_events(lines)
    tokens = [e for e in events if e["type"] == "token"]
    assert tokens and events[-1]["type"] == "error" and events[-1]["code"] == "WORKER_DIED"
    job = events[0]["job_id"]
    # a's end reached the watcher, so its start did too (published in order).
    watcher.wait_for(lambda e: e["type"] == "request_finished" and e["job_id"] == job)
    started = [e for e in watcher.events if e["type"] == "request_started" and e["job_id"] == job]
    assert len(started) == 1  # no silent retry once output was sent
