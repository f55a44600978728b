"""Every view of the dashboard as a picture, at two terminal sizes, over a made-up
fleet (several nodes, GPUs, an unreachable node: the same picture every run),
and the words a person reads on them."""

from __future__ import annotations

from typing import Any

import pytest
from textual.screen import Screen
from textual.widgets import Input, Static

from rbee_keeper.tui.app import DashboardApp
from rbee_keeper.tui.dialogs import AddNodeForm, ConfirmDialog, HelpScreen, StartWorkerForm
from rbee_keeper.tui.screens import NodeScreen, WorkerScreen
from rbee_keeper.tui.widgets import NodesTable, Totals, WorkersTable
from tests.test_dashboard import GPU, node, worker
from tests.test_dashboard_helpers import RecordingActions, app_with, settle

SECOND_GPU = {**GPU, "index": 1, "memory_used_mib": 2048, "temperature_c": 41, "utilization_pct": 3}
H100 = {
    "index": 0,
    "name": "NVIDIA H100 80GB HBM3",
    "memory_total_mib": 81559,
    "memory_used_mib": 70100,
    "temperature_c": 71,
    "utilization_pct": 92,
}
FLEET = {
    "type": "snapshot",
    "nodes": [
        node("gpu1", gpus=[GPU, SECOND_GPU]),
        node("gpu2", gpus=[H100]),
        node("laptop"),
        node("old-box", status="unreachable"),
    ],
    "workers": [
        worker("w-1", "gpu1"),
        worker("w-2", "gpu1", "busy"),
        worker("w-3", "gpu2", "busy"),
        worker("w-4", "laptop", "loading"),
    ],
}
FLEET["nodes"][3]["last_error"] = "connect timed out after 5.0s"
for fleet_node, latency in zip(FLEET["nodes"], (1.8, 2.4, 0.6, None), strict=True):
    fleet_node["latency_ms"] = latency


def finished(job: str, worker_id: str, node_name: str, rate: float, ttft: float) -> dict[str, Any]:
    return {
        "type": "request_finished",
        "job_id": job,
        "worker_id": worker_id,
        "node": node_name,
        "outcome": "EOS",
        "tokens_out": 200,
        "ttft_ms": ttft,
        "decode_time_ms": round(200 / rate * 1000),
        "tokens_per_s": rate,
    }


def started(job: str, worker_id: str, node_name: str) -> dict[str, Any]:
    return {
        "type": "request_started",
        "job_id": job,
        "worker_id": worker_id,
        "node": node_name,
        "model": "file:/m/tiny",
    }


# Requests served (their speeds in the tables) and one still streaming.
TRAFFIC = [
    started("j-1", "w-2", "gpu1"),
    finished("j-1", "w-2", "gpu1", 61.0, 84.0),
    started("j-2", "w-3", "gpu2"),
    finished("j-2", "w-3", "gpu2", 142.0, 31.0),
    started("j-3", "w-3", "gpu2"),
]
SIZES = [(140, 36), (100, 30)]
VIEWS = ["fleet", "node", "worker", "add-node", "start-worker", "confirm-stop", "help"]


async def open_view(pilot: Any, view: str) -> None:
    """Drive the app to `view` as a person would, with the keys they would press."""
    app = pilot.app
    await settle(pilot, app, lambda: app.screen.query_one(NodesTable).row_count == 4)
    await settle(pilot, app, lambda: app.events_seen == 1 + len(TRAFFIC))
    if view in ("node", "worker", "start-worker"):
        app.screen.query_one(NodesTable).focus()
        await pilot.press("enter")
        await shown(pilot, app, NodeScreen)
    if view == "worker":
        app.screen.query_one("#node-workers").focus()
        await pilot.press("enter")
        await shown(pilot, app, WorkerScreen)
        log = app.screen.query_one("#log")
        await settle(pilot, app, lambda: bool(log.lines))
    keys = {"add-node": "a", "start-worker": "w", "confirm-stop": "s", "help": "question_mark"}
    if view in ("add-node", "confirm-stop"):
        app.screen.query_one(WorkersTable).focus()
    if view in keys:
        await pilot.press(keys[view])
        wanted = {
            "add-node": AddNodeForm,
            "start-worker": StartWorkerForm,
            "confirm-stop": ConfirmDialog,
            "help": HelpScreen,
        }
        await shown(pilot, app, wanted[view])
    for field in app.screen.query(Input):
        field.cursor_blink = False  # the same picture every run
    await pilot.pause(0.4)


async def shown(pilot: Any, app: DashboardApp, screen: type[Screen[Any]]) -> None:
    await settle(pilot, app, lambda: isinstance(app.screen, screen))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("view", VIEWS)
def test_snapshots(snap_compare: Any, view: str, size: tuple[int, int]) -> None:
    app = app_with([FLEET, *TRAFFIC], actions=RecordingActions(), queen_url="http://127.0.0.1:8080")
    assert snap_compare(app, terminal_size=size, run_before=lambda pilot: open_view(pilot, view))


async def test_the_words_read_as_a_person_reads_them() -> None:
    app = app_with([FLEET, *TRAFFIC], actions=RecordingActions(), queen_url="http://127.0.0.1:8080")
    async with app.run_test(size=SIZES[0]) as pilot:
        await settle(pilot, app, lambda: app.screen.query_one(NodesTable).row_count == 4)
        totals = str(app.screen.query_one(Totals).render())
        assert totals.startswith("● connected to http://127.0.0.1:8080 │ nodes 3/4 │ ")
        assert str(app.screen.query_one(NodesTable).get_row("gpu1")[3]) == (
            "2× NVIDIA GeForce RTX 3090"
        )
        assert app.title == "rbee fleet dashboard" and not app.sub_title
        await open_view(pilot, "node")
        summary = str(app.screen.query_one("#node-summary", Static).render())
        assert summary == (
            "gpu1 │ alice@10.0.0.5 │ reachable │ backends: cpu, cuda │ devices: 1 CPU, 2 GPUs"
        )
