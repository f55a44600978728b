"""The response's head leaves once a worker accepted the request, while it
prefills; failover still works after that, and a request that fails after
all ends in the stream's one `error` event.

Real workers on two nodes (both the loopback sshd) serve catalog model `two`,
one slot each. Their node's python is the real worker whose model's forward
pass waits while the node's stall file exists: a worker that accepted the
request and has not made its first token, for as long as the test needs.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.plugins.queen_events import Subscriber
from tests.plugins.sshd import SshServer
from tests.pressure_support import metric, wait_until
from tests.test_failover import pid_on, sse_events, warm_two

TASK = {"model": "two", "prompt": "Hi", "max_tokens": 8, "temperature": 0}
NODES = ("a", "b")

# Passes anything but the worker on to python; the worker's forward pass waits
# while STALL exists (checked every 10 ms).
WORKER_PYTHON = """#!{python}
import os, runpy, sys, time
if sys.argv[1:3] != ["-m", "rbee_worker"]:
    os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
from rbee_worker.backends import torch_backend

STALL = {stall!r}
real_load = torch_backend.TorchBackend.load

def load(self, progress):
    real_load(self, progress)
    forward = self._model.forward

    def stalling_forward(*args, **kwargs):
        while os.path.exists(STALL):
            time.sleep(0.01)
        return forward(*args, **kwargs)

    self._model.forward = stalling_forward

torch_backend.TorchBackend.load = load
sys.argv = [sys.argv[0], *sys.argv[3:]]
runpy.run_module("rbee_worker", run_name="__main__", alter_sys=True)
"""


@pytest.fixture
def stalling(rbee_home: Path, sshd: SshServer, tiny_model_dir: Path) -> Iterator[QueenProcess]:
    """Model `two` on nodes a and b, a worker warm on each, none stalled yet."""
    queen = start_queen(rbee_home)
    try:
        for name in NODES:
            python = rbee_home / f"python-{name}"
            python.write_text(
                WORKER_PYTHON.format(python=sys.executable, stall=str(stall(queen, name)))
            )
            python.chmod(0o755)
            body = sshd.node_body(name, rbee_home / name, accept_new_host_key=True)
            queen.add_node({**body, "worker_python": str(python)})
        warm_two(queen, tiny_model_dir)
        yield queen
    finally:
        for name in NODES:
            stall(queen, name).unlink(missing_ok=True)
        stop_queen(queen)


def stall(queen: QueenProcess, node: str) -> Path:
    return queen.home / f"stall-{node}"


def taken_by(watcher: Subscriber, skip: int = 0) -> str:
    """The node of the request's next claim."""
    seen = watcher.wait_for(
        lambda e: (
            e["type"] == "request_started"
            and sum(1 for s in watcher.events if s["type"] == "request_started") > skip
        )
    )
    started = [e for e in watcher.events if e["type"] == "request_started"]
    assert seen and len(started) > skip
    return str(started[skip]["node"])


def all_stalled(queen: QueenProcess) -> Subscriber:
    """Both workers stalled before their next token; the queen's events, read from now."""
    for name in NODES:
        stall(queen, name).touch()
    watcher = Subscriber(queen)
    watcher.start()
    return watcher


def other(node: str) -> str:
    return next(n for n in NODES if n != node)


def test_the_head_leaves_before_the_first_token_and_failover_still_works(
    stalling: QueenProcess,
) -> None:
    queen = stalling
    watcher = all_stalled(queen)
    with queen.client() as c, c.stream("POST", "/v2/tasks", json=TASK) as r:
        # The head is here while the worker that took the request makes no token.
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        first = taken_by(watcher)
        stall(queen, other(first)).unlink()
        os.kill(pid_on(queen, first), signal.SIGKILL)  # lost before its first token
        events = sse_events(r.iter_lines())
    kinds = [e["type"] for e in events]
    assert kinds[0] == "started" and "token" in kinds and kinds[-1] == "end", events
    assert not any(e["type"] == "error" for e in events)
    assert taken_by(watcher, skip=1) == other(first)  # once more, on the other node
    finished = watcher.wait_for(lambda e: e["type"] == "request_finished" and e["node"] == first)
    assert finished["outcome"] == "WORKER_DIED"


def test_a_request_that_fails_after_its_head_ends_in_one_error_event(
    stalling: QueenProcess,
) -> None:
    queen = stalling
    watcher = all_stalled(queen)
    completion = {"model": "two", "prompt": "Hi", "max_tokens": 8, "stream": True}
    with queen.client() as c, c.stream("POST", "/v1/completions", json=completion) as r:
        assert r.status_code == 200
        first = taken_by(watcher)
        os.kill(pid_on(queen, first), signal.SIGKILL)
        second = taken_by(watcher, skip=1)
        assert second == other(first)
        os.kill(pid_on(queen, second), signal.SIGKILL)  # the last attempt, lost too
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]", lines
    assert len(lines) == 2, lines  # nothing but the error and [DONE]
    error = json.loads(lines[0][len("data: ") :])["error"]
    assert error["code"] == "inference_failed", error  # OpenAI's shape: lower case
    assert "before a token" in error["message"]
    # Both claims let go: nothing in flight, no slot held.
    wait_until(lambda: metric(queen, "rbee_requests_in_flight") == 0, "claims released")


def test_a_client_that_leaves_before_the_first_token_frees_the_slot(
    stalling: QueenProcess,
) -> None:
    queen = stalling
    watcher = all_stalled(queen)
    with queen.client() as c, c.stream("POST", "/v2/tasks", json=TASK) as r:
        assert r.status_code == 200
        first = taken_by(watcher)
    # The client left with the head only; the claim ends as cancelled.
    finished: dict[str, Any] = watcher.wait_for(
        lambda e: e["type"] == "request_finished" and e["node"] == first
    )
    assert finished["outcome"] == "CANCELLED"
    for name in NODES:
        stall(queen, name).unlink()
    with queen.client() as c:  # both slots serve again
        for _ in NODES:
            assert c.post("/v2/tasks", json=TASK).status_code == 200
    wait_until(lambda: metric(queen, "rbee_requests_in_flight") == 0, "claims released")
