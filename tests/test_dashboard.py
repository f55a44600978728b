"""The Textual dashboard, driven with Textual's Pilot: over events recorded from
a real queen (tests/plugins/queen_events.py), over a made-up fleet with a GPU
and an unreachable node where the picture must be the same every run (the
snapshots), and live against a real queen with a real worker. The actions are
in test_dashboard_actions.py, the fleet picture in test_dashboard_fleet.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rbee_keeper.tui.app import create_app
from rbee_keeper.tui.fleet import RATE_WINDOW_S
from rbee_keeper.tui.screens import FleetScreen, NodeScreen, WorkerScreen
from rbee_keeper.tui.source import QueenActions, QueenSource
from rbee_keeper.tui.widgets import NodesTable, Totals, WorkersTable
from tests.plugins.procs import worker_pids
from tests.plugins.queen import QueenProcess
from tests.plugins.sshd import SshServer
from tests.test_dashboard_helpers import RecordingActions, Replay, app_with, settle

if TYPE_CHECKING:
    from tests.plugins.queen_events import QueenRecording

# Not imported above: the plugin registers first, so pytest rewrites its asserts.
pytest_plugins = ["tests.plugins.queen_events"]

# A made-up fleet: a loopback queen has no GPU and no unreachable node to record.
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


async def test_fleet_screen_shows_the_recorded_fleet_as_it_changes(
    queen_recording: QueenRecording,
) -> None:
    finished = queen_recording.of_type("request_finished")
    worker_id, node_name = queen_recording.worker_id, queen_recording.node
    served = queen_recording.until(lambda e: e is finished[-1])
    app = app_with([queen_recording.live_snapshot, *served[1:]], queen_url="http://q:8080")
    async with app.run_test(size=(140, 40)) as pilot:
        nodes = app.screen.query_one(NodesTable)
        workers = app.screen.query_one(WorkersTable)
        await settle(pilot, app, lambda: str(workers.get_row(worker_id)[5]) != "-")
        assert str(nodes.get_row(node_name)[3]) == "cpu only"
        row = [str(cell) for cell in workers.get_row(worker_id)]
        rate, ttft = finished[-1]["tokens_per_s"], finished[-1]["ttft_ms"]
        assert row[1:5] == [node_name, "idle", queen_recording.model_ref, "0"]
        assert row[5:] == [f"{rate:.0f}", f"{ttft:.0f} ms"]
        totals = str(app.screen.query_one(Totals).render())
        assert "connected" in totals and "workers 1" in totals and "in flight 0" in totals
        tokens = sum(e["tokens_out"] for e in finished)
        assert f"fleet {tokens / RATE_WINDOW_S:.1f} tok/s" in totals


async def test_the_stopped_worker_leaves_the_screen(queen_recording: QueenRecording) -> None:
    app = app_with(queen_recording.events)
    async with app.run_test(size=(140, 40)) as pilot:
        nodes = app.screen.query_one(NodesTable)
        await settle(pilot, app, lambda: app.events_seen == len(queen_recording.events))
        await settle(pilot, app, lambda: nodes.row_count == 1)
        assert str(nodes.get_row(queen_recording.node)[1]) == "reachable"
        assert app.screen.query_one(WorkersTable).row_count == 0


async def test_fleet_screen_shows_gpus_and_unreachable_nodes() -> None:
    app = app_with([SNAPSHOT], queen_url="http://q:8080")
    async with app.run_test(size=(140, 40)) as pilot:
        nodes = app.screen.query_one(NodesTable)
        await settle(pilot, app, lambda: nodes.row_count == 2)
        assert app.screen.query_one(WorkersTable).row_count == 2
        assert str(nodes.get_row("gpu1")[3]) == "NVIDIA GeForce RTX 3090"
        assert str(nodes.get_row("gpu2")[1]) == "unreachable"
        totals = str(app.screen.query_one(Totals).render())
        assert "connected" in totals and "nodes 1/2" in totals and "workers 2" in totals


async def test_drill_down_node_then_worker_with_log() -> None:
    app = app_with([SNAPSHOT], actions=RecordingActions())
    async with app.run_test(size=(140, 40)) as pilot:
        nodes = app.screen.query_one(NodesTable)
        await settle(pilot, app, lambda: nodes.row_count == 2)
        nodes.focus()
        await pilot.press("enter")
        await settle(pilot, app, lambda: isinstance(app.screen, NodeScreen))
        screen = app.screen
        await settle(pilot, app, lambda: screen.query_one("#gpus").row_count == 1)
        gpu_row = [str(c) for c in screen.query_one("#gpus").get_row_at(0)]
        assert "18.0/24 GiB" in gpu_row[2] and gpu_row[3] == "67 °C"
        screen.query_one("#node-workers").focus()
        await pilot.press("enter")
        await settle(pilot, app, lambda: isinstance(app.screen, WorkerScreen))
        log = app.screen.query_one("#log")
        await settle(pilot, app, lambda: "log of w-1 on gpu1" in "\n".join(log.lines))
        await pilot.press("escape", "escape")
        assert isinstance(app.screen, FleetScreen)


async def test_queen_going_away_is_shown_and_the_dashboard_reconnects(
    queen_recording: QueenRecording,
) -> None:
    live = queen_recording.live_snapshot
    sources = iter([Replay([live], then_fail="connection reset"), Replay([live])])
    app = create_app(lambda: next(sources))
    async with app.run_test(size=(140, 40)) as pilot:
        seen_lost = False

        def lost_then_back() -> bool:
            nonlocal seen_lost
            text = str(app.screen.query_one(Totals).render())
            seen_lost = seen_lost or "queen unreachable" in text
            return seen_lost and app.events_seen >= 2 and app.fleet.connected

        await settle(pilot, app, lost_then_back)


async def test_a_hundred_workers(queen_recording: QueenRecording) -> None:
    # The recorded node and worker, and the recorded worker events, a hundred times.
    snapshot = queen_recording.live_snapshot
    (recorded_node,) = snapshot["nodes"]
    (recorded_worker,) = snapshot["workers"]
    idle = next(e for e in queen_recording.of_type("worker") if e["state"] == "idle")
    workers = [
        {**recorded_worker, "worker_id": f"w-{i:03}", "node": f"n{i % 10}", "state": "busy"}
        for i in range(100)
    ]
    snapshot = {
        "type": "snapshot",
        "nodes": [{**recorded_node, "node_name": f"n{i}"} for i in range(10)],
        "workers": workers,
    }
    changes = [{**idle, "worker_id": f"w-{i:03}", "node": f"n{i % 10}"} for i in range(100)]
    app = app_with([snapshot, *changes])
    async with app.run_test(size=(140, 40)) as pilot:
        table = app.screen.query_one(WorkersTable)
        await settle(pilot, app, lambda: app.events_seen == 101 and table.row_count == 100)
        await pilot.pause(0.3)
        assert {str(table.get_row(f"w-{i:03}")[2]) for i in range(100)} == {"idle"}


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
