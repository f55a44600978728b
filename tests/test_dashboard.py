"""The Textual dashboard, driven with Textual's Pilot: with recorded events for
the screens and behaviours, and against a real queen with a real worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from rbee_keeper.tui.app import DashboardApp, create_app
from rbee_keeper.tui.fleet import Fleet
from rbee_keeper.tui.screens import Confirm, FleetView, NodeView, WorkerView
from rbee_keeper.tui.source import QueenActions, QueenSource
from rbee_keeper.tui.widgets import NodesTable, Totals, WorkersTable
from tests.plugins.procs import worker_pids
from tests.plugins.queen import QueenProcess
from tests.plugins.sshd import SshServer

GPU = {
    "index": 0,
    "name": "NVIDIA GeForce RTX 3090",
    "memory_total_mib": 24576,
    "memory_used_mib": 18432,
    "temperature_c": 67,
    "utilization_pct": 98,
}


def node(name: str, status: str = "reachable", gpus: list[Any] | None = None) -> dict[str, Any]:
    return {
        "node_name": name,
        "ssh_host": "10.0.0.5",
        "ssh_user": "alice",
        "status": status,
        "backends": ["cpu", "cuda"] if gpus else ["cpu"],
        "devices": {"cpu": 1, "cuda": len(gpus or [])},
        "gpus": gpus or [],
    }


def worker(worker_id: str, node_name: str, state: str = "idle") -> dict[str, Any]:
    return {"worker_id": worker_id, "node": node_name, "state": state, "model_ref": "file:/m/tiny"}


SNAPSHOT = {
    "type": "snapshot",
    "nodes": [node("gpu1", gpus=[GPU]), node("gpu2", status="unreachable")],
    "workers": [worker("w-1", "gpu1"), worker("w-2", "gpu1", "busy")],
}


class Recorded:
    """An event source that replays events, then stays open (or fails) like a live link."""

    def __init__(self, events: list[dict[str, Any]], then_fail: str | None = None) -> None:
        self._events = events
        self._then_fail = then_fail

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        for event in self._events:
            yield event
        if self._then_fail:
            raise ConnectionError(self._then_fail)
        await asyncio.Event().wait()  # open until the app quits and cancels it


class RecordingActions:
    def __init__(self) -> None:
        self.stopped: list[str] = []

    def stop_worker(self, worker_id: str) -> dict[str, Any]:
        self.stopped.append(worker_id)
        return {"worker_id": worker_id, "stopped": True, "forced": False}

    def start_worker(self, node: str, model_ref: str) -> dict[str, Any]:
        return {}

    def log_tail(self, node: str, worker_id: str) -> list[str]:
        return [f"log of {worker_id} on {node}"]


def app_with(events: list[dict[str, Any]], **kwargs: Any) -> DashboardApp:
    return create_app(lambda: Recorded(events), kwargs.pop("actions", None), **kwargs)


async def settle(pilot: Any, app: DashboardApp, until: Any, timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not until():
        assert loop.time() < deadline, f"never showed what was expected ({app.fleet.last_error})"
        await pilot.pause(0.05)


async def test_fleet_view_shows_nodes_workers_and_totals() -> None:
    finished = {
        "type": "request_finished",
        "worker_id": "w-2",
        "job_id": "j1",
        "tokens_out": 50,
        "tokens_per_s": 250.0,
        "ttft_ms": 12.0,
    }
    app = app_with([SNAPSHOT, finished], queen_url="http://q:8080")
    async with app.run_test(size=(140, 40)) as pilot:
        nodes = app.screen.query_one(NodesTable)
        await settle(pilot, app, lambda: nodes.row_count == 2)
        workers = app.screen.query_one(WorkersTable)
        assert workers.row_count == 2
        assert str(nodes.get_row("gpu1")[3]) == "NVIDIA GeForce RTX 3090"
        assert str(nodes.get_row("gpu2")[1]) == "unreachable"
        assert str(workers.get_row("w-2")[5]) == "250"
        totals = str(app.screen.query_one(Totals).render())
        assert "connected" in totals and "nodes 1/2" in totals and "5.0 tok/s" in totals


async def test_drill_down_node_then_worker_with_log() -> None:
    app = app_with([SNAPSHOT], actions=RecordingActions())
    async with app.run_test(size=(140, 40)) as pilot:
        nodes = app.screen.query_one(NodesTable)
        await settle(pilot, app, lambda: nodes.row_count == 2)
        nodes.focus()
        await pilot.press("enter")
        await settle(pilot, app, lambda: isinstance(app.screen, NodeView))
        screen = app.screen
        await settle(pilot, app, lambda: screen.query_one("#gpus").row_count == 1)
        gpu_row = [str(c) for c in screen.query_one("#gpus").get_row_at(0)]
        assert "18.0/24 GiB" in gpu_row[2] and gpu_row[3] == "67 °C"
        screen.query_one("#node-workers").focus()
        await pilot.press("enter")
        await settle(pilot, app, lambda: isinstance(app.screen, WorkerView))
        log = app.screen.query_one("#log")
        await settle(pilot, app, lambda: "log of w-1 on gpu1" in "\n".join(log.lines))
        await pilot.press("escape", "escape")
        assert isinstance(app.screen, FleetView)


async def test_stop_asks_first_and_read_only_hides_it() -> None:
    actions = RecordingActions()
    app = app_with([SNAPSHOT], actions=actions)
    async with app.run_test(size=(140, 40)) as pilot:
        workers = app.screen.query_one(WorkersTable)
        await settle(pilot, app, lambda: workers.row_count == 2)
        workers.focus()
        await pilot.press("s")
        assert isinstance(app.screen, Confirm)
        await pilot.press("n")
        assert actions.stopped == []
        await pilot.press("s")
        await pilot.press("y")
        await settle(pilot, app, lambda: actions.stopped == ["w-1"])

    read_only = app_with([SNAPSHOT], actions=RecordingActions(), read_only=True)
    async with read_only.run_test(size=(140, 40)) as pilot:
        workers = read_only.screen.query_one(WorkersTable)
        await settle(pilot, read_only, lambda: workers.row_count == 2)
        workers.focus()
        await pilot.press("s")
        await pilot.pause(0.2)
        assert not isinstance(read_only.screen, Confirm)
        assert "Stop" not in str(read_only.screen.query_one("Footer").render())


async def test_queen_going_away_is_shown_and_the_dashboard_reconnects() -> None:
    sources = iter([Recorded([SNAPSHOT], then_fail="connection reset"), Recorded([SNAPSHOT])])
    app = create_app(lambda: next(sources))
    async with app.run_test(size=(140, 40)) as pilot:
        seen_lost = False

        def lost_then_back() -> bool:
            nonlocal seen_lost
            text = str(app.screen.query_one(Totals).render())
            seen_lost = seen_lost or "queen unreachable" in text
            return seen_lost and app.events_seen >= 2 and app.fleet.connected

        await settle(pilot, app, lost_then_back)


async def test_a_hundred_workers() -> None:
    workers = [worker(f"w-{i:03}", f"n{i % 10}", "busy" if i % 3 else "idle") for i in range(100)]
    snapshot = {
        "type": "snapshot",
        "nodes": [node(f"n{i}") for i in range(10)],
        "workers": workers,
    }
    changes = [
        {"type": "worker", "worker_id": f"w-{i:03}", "node": f"n{i % 10}", "state": "idle"}
        for i in range(100)
    ]
    app = app_with([snapshot, *changes])
    async with app.run_test(size=(140, 40)) as pilot:
        table = app.screen.query_one(WorkersTable)
        await settle(pilot, app, lambda: app.events_seen == 101 and table.row_count == 100)
        await pilot.pause(0.3)
        assert {str(table.get_row(f"w-{i:03}")[2]) for i in range(100)} == {"idle"}


def test_fleet_model_drops_stopped_workers_and_counts_rates() -> None:
    fleet = Fleet()
    fleet.apply(SNAPSHOT, now=100.0)
    fleet.apply({"type": "request_started", "worker_id": "w-1", "job_id": "a"}, now=100.0)
    assert fleet.requests_in_flight == 1
    fleet.apply(
        {"type": "request_finished", "worker_id": "w-1", "job_id": "a", "tokens_out": 30},
        now=101.0,
    )
    assert fleet.requests_in_flight == 0
    assert fleet.tokens_per_second(now=105.0) == 3.0
    assert fleet.tokens_per_second(now=200.0) == 0.0
    fleet.apply({"type": "worker", "worker_id": "w-1", "state": "stopped"})
    assert set(fleet.workers) == {"w-2"}


async def test_against_a_real_queen_and_worker(
    queen: QueenProcess, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    body = sshd.node_body("n1", tmp_path / "inst", accept_new_host_key=True)
    with queen.client() as c:
        assert c.post("/v2/registry/beehives/add", json=body).status_code == 201
    app = create_app(lambda: QueenSource(queen.url), QueenActions(queen.url), queen_url=queen.url)
    async with app.run_test(size=(140, 40)) as pilot:
        nodes = app.screen.query_one(NodesTable)
        await settle(pilot, app, lambda: nodes.row_count == 1)

        def infer() -> None:
            with queen.client() as c:
                task = {"node": "n1", "model": f"file:{tiny_model_dir}", "prompt": "hi"}
                with c.stream("POST", "/v2/tasks", json=task) as r:
                    r.read()

        await asyncio.to_thread(infer)
        table = app.screen.query_one(WorkersTable)
        await settle(pilot, app, lambda: table.row_count == 1, timeout=30)
        (worker_id,) = app.fleet.workers
        await settle(pilot, app, lambda: str(table.get_row(worker_id)[2]) == "idle")
        assert worker_pids(worker_id)
        table.focus()
        await pilot.press("s", "y")
        await settle(pilot, app, lambda: table.row_count == 0, timeout=30)
    assert worker_pids(worker_id) == []


@pytest.mark.parametrize("screen", ["fleet", "node"])
def test_snapshots(snap_compare: Any, screen: str) -> None:
    events = [SNAPSHOT]

    async def run_before(pilot: Any) -> None:
        app = pilot.app
        await settle(pilot, app, lambda: app.screen.query_one(NodesTable).row_count == 2)
        if screen == "node":
            app.screen.query_one(NodesTable).focus()
            await pilot.press("enter")
            await settle(pilot, app, lambda: isinstance(app.screen, NodeView))
            await pilot.pause(0.4)

    app = app_with(events, actions=RecordingActions(), queen_url="http://127.0.0.1:8080")
    assert snap_compare(app, terminal_size=(140, 36), run_before=run_before)
