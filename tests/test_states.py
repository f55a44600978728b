"""Walk every pair of worker states: each allowed move works and is recorded,
every other one is refused and changes nothing."""

from __future__ import annotations

import pytest

from rbee_queen.store.tables import Node, Worker, WorkerEvent
from rbee_queen.workers.states import (
    ALLOWED,
    IllegalTransition,
    StateRecorder,
    WorkerState,
)
from tests.plugins.postgres import StoreTarget


@pytest.fixture
def worker(store_target: StoreTarget) -> Worker:
    db = store_target.open()  # a SQLite file, then a PostgreSQL database
    node = Node.create(name="n1", ssh_host="h", ssh_user="u", ssh_key_path="/k", install_path="/i")
    yield Worker.create(worker_id="w-1", node=node, model_ref="file:/m", state="spawning")
    db.close()


def test_every_pair_of_states(worker: Worker) -> None:
    heard: list[tuple[str | None, str]] = []
    states = StateRecorder(lambda w, a, b, r: heard.append((a and a.value, b.value)))
    transition = states.transition
    for start in WorkerState:
        for target in WorkerState:
            if target == start:
                continue
            worker.state = start.value
            worker.save()
            events_before = WorkerEvent.select().count()
            if target in ALLOWED[start]:
                transition(worker, target, "walk")
                assert Worker.get_by_id("w-1").state == target.value
                last = WorkerEvent.select().order_by(WorkerEvent.id.desc()).get()
                assert (last.from_state, last.to_state) == (start.value, target.value)
                assert heard[-1] == (start.value, target.value)
            else:
                with pytest.raises(IllegalTransition):
                    transition(worker, target, "walk")
                assert Worker.get_by_id("w-1").state == start.value
                assert WorkerEvent.select().count() == events_before


def test_stopped_is_final_and_every_state_can_end() -> None:
    assert ALLOWED[WorkerState.STOPPED] == frozenset()
    # From every state there is a path to stopped.
    for start in WorkerState:
        seen, frontier = {start}, [start]
        while frontier:
            for nxt in ALLOWED[frontier.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        assert WorkerState.STOPPED in seen, start
