"""A growing queue starts another worker: real queen, workers and tiny model on
three nodes (all the loopback sshd, one install path each), model `burst` with
one slot per worker, `workers.max_per_model = 2` and `queue.scale_up_depth = 3`.

Worker a is held busy (its slot taken by a stream, its process frozen). Two
queued requests start nothing; the third starts a worker on b, which takes
the first in line; b is frozen in turn, a thawed, and a serves the rest. Each
queued request completes; a third worker (on c) never starts, though more
requests keep arriving while two run.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.plugins.procs import worker_pids
from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.plugins.queen_events import Subscriber
from tests.plugins.sshd import SshServer
from tests.pressure_support import LONG, frozen_slot_of, metric, wait_until

TASK = {"model": "burst", "prompt": "Hi", "max_tokens": 4, "temperature": 0}
# Long enough that b is frozen while it still serves the first request in line.
QUEUED = {**LONG, "model": "burst", "max_tokens": 128}


@pytest.fixture
def three_nodes(
    rbee_home: Path, sshd: SshServer, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[QueenProcess]:
    monkeypatch.setenv("RBEE_WORKERS_MAX_PER_MODEL", "2")
    monkeypatch.setenv("RBEE_QUEUE_SCALE_UP_DEPTH", "3")
    monkeypatch.setenv("RBEE_QUEUE_SCALE_UP_AFTER", "600")  # only the depth starts one here
    monkeypatch.setenv("RBEE_SUPERVISOR_INTERVAL", "0")  # a frozen worker stays, not restarted
    queen = start_queen(rbee_home)
    try:
        for name in ("a", "b", "c"):
            queen.add_node(sshd.node_body(name, rbee_home / name, accept_new_host_key=True))
        entry = {"name": "burst", "model_ref": f"file:{tiny_model_dir}", "nodes": ["a", "b", "c"]}
        with queen.client() as c:
            assert c.post("/v2/registry/models/add", json=entry).status_code == 201
            assert c.post("/v2/tasks", json=TASK).status_code == 200  # starts a
        yield queen
    finally:
        stop_queen(queen)


def pid_on(queen: QueenProcess, node: str) -> int:
    (pid,) = worker_pids(under=str(queen.home / node))
    return pid


def workers_on(queen: QueenProcess) -> dict[str, str]:
    with queen.client() as c:
        listed = c.get("/v2/workers/list?all=1").json()["workers"]
    return {w["node"]: w["state"] for w in listed}


class Burst:
    """Requests sent one by one on threads; each one's status and end event."""

    def __init__(self, queen: QueenProcess) -> None:
        self.queen = queen
        self.results: list[tuple[int, str]] = []
        self.threads: list[threading.Thread] = []

    def send(self, count: int, until: Callable[[], bool] | None = None) -> None:
        """Send `count` requests, each once the one before has queued (or once
        `until` holds)."""
        for _ in range(count):
            queued = metric(self.queen, "rbee_queue_depth")
            thread = threading.Thread(target=self._one, daemon=True)
            thread.start()
            self.threads.append(thread)
            done = until or (lambda: metric(self.queen, "rbee_queue_depth") > queued)  # noqa: B023
            wait_until(done, "queued")

    def _one(self) -> None:
        headers = {"Authorization": f"Bearer {self.queen.token}"}
        with httpx.Client(base_url=self.queen.url, headers=headers, timeout=120) as c:
            r = c.post("/v2/tasks", json=QUEUED)
        self.results.append((r.status_code, r.text))

    def join(self) -> None:
        for thread in self.threads:
            thread.join(60)
            assert not thread.is_alive(), "a queued request never ended"


def test_a_growing_queue_starts_a_second_worker_and_never_a_third(
    three_nodes: QueenProcess,
) -> None:
    queen = three_nodes
    events = Subscriber(queen)
    events.start()
    burst = Burst(queen)
    with frozen_slot_of(queen, pid_on(queen, "a"), "burst"):
        burst.send(2)  # below the depth: each decided as it queued, nothing started
        assert workers_on(queen) == {"a": "busy"}
        burst.send(1, until=lambda: bool(scale_ups(events)))  # the third starts b
        wait_until(lambda: workers_on(queen).get("b") == "busy", "b took the first in line")
        os.kill(pid_on(queen, "b"), signal.SIGSTOP)
        burst.send(2)  # more arrive while a and b run: the limit holds
    wait_until(lambda: len(burst.results) == 4, "a served the rest", timeout=60)
    os.kill(pid_on(queen, "b"), signal.SIGCONT)
    burst.join()
    assert [status for status, _ in burst.results] == [200] * 5, burst.results
    assert all('"type": "end"' in text for _, text in burst.results), burst.results
    assert sorted(workers_on(queen)) == ["a", "b"]  # c never had a worker, stopped ones too
    finished = served_by(events.events, 6)  # the held stream and the burst's five
    nodes = [f.split()[0] for f in finished]
    assert nodes.count("b") == 1 and nodes.count("a") == 5, finished
    (scale_up,) = scale_ups(events)
    assert (scale_up["node"], scale_up["workers"], scale_up["depth"]) == ("b", 1, 3), scale_up
    assert metric(queen, "rbee_worker_scale_ups_total") == 1


def scale_ups(events: Subscriber) -> list[dict[str, Any]]:
    return [e for e in events.events if e.get("type") == "scale_up"]


def served_by(events: list[dict[str, Any]], count: int) -> list[str]:
    """The nodes of the first `count` finished requests, once they all are."""
    wait_until(
        lambda: len([e for e in events if e.get("type") == "request_finished"]) >= count,
        "every request finished",
    )
    return [
        f"{e['node']} {e['job_id']} {e.get('outcome')}"
        for e in events
        if e.get("type") == "request_finished"
    ]
