"""Events recorded from a real queen, for the dashboard's tests.

A real queen (with the loopback sshd as its node and the tiny model) runs a
small scenario once per test session while a subscriber reads `GET /v2/events`:
add the node, two inferences, stop the worker. The tests then replay what the
queen actually published, so a change in the queen's events shows up as a
failing dashboard test rather than as a stale hand-written dict.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.plugins.sshd import SshServer

Event = dict[str, Any]
NODE = "n1"
INFERENCES = 2


@dataclass
class QueenRecording:
    """What the queen published, in order, and the names the scenario used."""

    events: list[Event]
    # What a dashboard connecting mid-scenario got first: the node and the worker,
    # idle after the inferences.
    live_snapshot: Event
    node: str
    worker_id: str
    model_ref: str
    inferences: int = INFERENCES

    def of_type(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.get("type") == kind]

    def until(self, stop: Callable[[Event], bool]) -> list[Event]:
        """The events up to and including the first for which `stop` is true."""
        for index, event in enumerate(self.events):
            if stop(event):
                return self.events[: index + 1]
        raise AssertionError("the recording has no such event")


@dataclass
class Subscriber:
    """Reads the queen's SSE stream on a thread until the queen closes it."""

    queen: QueenProcess
    events: list[Event] = field(default_factory=list)
    subscribed: threading.Event = field(default_factory=threading.Event)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._read, daemon=True)
        thread.start()
        assert self.subscribed.wait(20), "the queen never answered GET /v2/events"
        return thread

    def _read(self) -> None:
        try:
            with (
                self.queen.client() as c,
                c.stream("GET", "/v2/events", timeout=None) as response,
            ):
                response.raise_for_status()
                self.subscribed.set()
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        self.events.append(json.loads(line[5:]))
        except Exception:  # the queen stopping ends the stream however it ends
            return

    def wait_for(self, found: Callable[[Event], bool], timeout: float = 60) -> Event:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in list(self.events):
                if found(event):
                    return event
            time.sleep(0.05)
        raise AssertionError(f"the queen never published the event; got {self.events}")


def first_event(queen: QueenProcess) -> Event:
    """The snapshot a new subscriber gets first."""
    with queen.client() as c, c.stream("GET", "/v2/events") as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                event: Event = json.loads(line[5:])
                return event
    raise AssertionError("the queen's event stream ended before its snapshot")


def run_scenario(
    subscriber: Subscriber, sshd: SshServer, model: Path, root: Path
) -> tuple[str, Event]:
    """Add the node, run the inferences, stop the worker; returns the worker's id
    and the snapshot taken before the stop."""
    queen = subscriber.queen
    queen.add_node(sshd.node_body(NODE, root / "install", accept_new_host_key=True))
    task = {"node": NODE, "model": f"file:{model}", "prompt": "hi", "max_tokens": 8}
    with queen.client() as c:
        for _ in range(INFERENCES):
            with c.stream("POST", "/v2/tasks", json=task) as r:
                assert r.status_code == 200, r.read()
                r.read()
        started = subscriber.wait_for(lambda e: e.get("type") == "request_started")
        worker_id = str(started["worker_id"])
        live_snapshot = first_event(queen)
        r = c.post("/v2/workers/shutdown", json={"worker_id": worker_id})
        assert r.status_code == 200, r.text
    return worker_id, live_snapshot


@pytest.fixture(scope="session")
def queen_recording(
    sshd: SshServer, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[QueenRecording]:
    root = tmp_path_factory.mktemp("recorded-queen")
    home = root / "rbee-home"
    home.mkdir()
    queen = start_queen(home)
    try:
        subscriber = Subscriber(queen)
        reader = subscriber.start()
        worker_id, live_snapshot = run_scenario(subscriber, sshd, tiny_model_dir, root)
        subscriber.wait_for(
            lambda e: (
                e.get("type") == "worker"
                and e.get("worker_id") == worker_id
                and e.get("state") == "stopped"
            )
        )
        # The node's status comes with the queen's next health check.
        subscriber.wait_for(lambda e: e.get("type") == "node" and e.get("node") == NODE)
    finally:
        stop_queen(queen)
    reader.join(timeout=10)
    yield QueenRecording(
        list(subscriber.events), live_snapshot, NODE, worker_id, f"file:{tiny_model_dir}"
    )
