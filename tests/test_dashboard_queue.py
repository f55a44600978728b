"""The dashboard's queue figure (rbee_keeper.tui.fleet) fed the events of a real
queen whose one-slot worker is held busy while two more requests wait."""

from __future__ import annotations

from pathlib import Path

from rbee_keeper.tui.fleet import Fleet
from tests.plugins.procs import worker_pids
from tests.plugins.queen import start_queen, stop_queen
from tests.plugins.queen_events import Subscriber
from tests.plugins.sshd import SshServer
from tests.pressure_support import frozen_slot_of, in_thread

SHORT = {"model": "one", "prompt": "Hi", "max_tokens": 2, "temperature": 0}


def record_a_queue(home: Path, sshd: SshServer, model: Path) -> list[dict[str, object]]:
    """The queen's events while two requests wait behind a frozen one-slot worker."""
    queen = start_queen(home)
    try:
        queen.add_node(sshd.node_body("a", home / "node", accept_new_host_key=True))
        entry = {"name": "one", "model_ref": f"file:{model}", "nodes": ["a"], "slots": 1}
        with queen.client() as c:
            assert c.post("/v2/registry/models/add", json=entry).status_code == 201
            assert c.post("/v1/completions", json=SHORT).status_code == 200  # warm
        subscriber = Subscriber(queen)
        subscriber.start()
        (pid,) = worker_pids(under=str(home))

        def ask() -> int:
            with queen.client() as c:
                return c.post("/v1/completions", json=SHORT).status_code

        with frozen_slot_of(queen, pid, "one"):
            waiting = [in_thread(ask)]
            subscriber.wait_for(lambda e: e.get("type") == "request_queued")
            waiting.append(in_thread(ask))
            subscriber.wait_for(lambda e: e.get("type") == "request_queued" and e["depth"] == 2)
        for thread, _ in waiting:
            thread.join(60)
        assert [out for _, out in waiting] == [[200], [200]]
        subscriber.wait_for(lambda e: e.get("type") == "request_dequeued" and e["depth"] == 0)
        return list(subscriber.events)
    finally:
        stop_queen(queen)


def test_the_fleet_counts_the_queue_as_the_queen_reports_it(
    tmp_path: Path, sshd: SshServer, tiny_model_dir: Path
) -> None:
    events = record_a_queue(tmp_path, sshd, tiny_model_dir)
    fleet = Fleet()
    seen = []
    for event in events:
        fleet.apply(event)
        if event["type"] in ("request_queued", "request_dequeued"):
            seen.append(fleet.queued)
    assert seen[:2] == [1, 2], seen  # each waiting request counted as it queued
    assert max(seen) == 2 and seen[-1] == 0 and fleet.queues == {}, seen
    fleet.apply({"type": "request_queued", "model": "one", "depth": 3})
    fleet.apply({"type": "snapshot", "nodes": [], "workers": [], "notices": []})
    assert fleet.queued == 0  # a new snapshot: the old depths are unknown
