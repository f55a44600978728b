"""The Textual dashboard, driven with Textual's Pilot: with recorded events for
the screens and behaviours, and against a real queen with a real worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Checkbox, Input, Label

from rbee_keeper.tui.app import DashboardApp, create_app
from rbee_keeper.tui.dialogs import AddNodeForm, ConfirmDialog, StartWorkerForm
from rbee_keeper.tui.fleet import Fleet
from rbee_keeper.tui.messages import AddNode, RestartWorker, StartWorkerOn
from rbee_keeper.tui.screens import FleetScreen, NodeScreen, WorkerScreen
from rbee_keeper.tui.source import QueenActions, QueenSource
from rbee_keeper.tui.widgets import NodesTable, Totals, WorkersTable
from rbee_queen import errors
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
    """Records every call in order; `fail` names calls that raise `errors[name]`."""

    def __init__(self, fail: dict[str, Exception] | None = None) -> None:
        self.stopped: list[str] = []
        self.calls: list[tuple[Any, ...]] = []
        self.fail = fail or {}

    def _record(self, *call: Any) -> None:
        self.calls.append(call)
        if call[0] in self.fail:
            raise self.fail[call[0]]

    def stop_worker(self, worker_id: str) -> dict[str, Any]:
        self._record("stop", worker_id)
        self.stopped.append(worker_id)
        return {"worker_id": worker_id, "stopped": True, "forced": False}

    def start_worker(self, node: str, model_ref: str) -> dict[str, Any]:
        self._record("start", node, model_ref)
        return {"events": [{"type": "done"}]}

    def add_node(self, node: dict[str, Any]) -> dict[str, Any]:
        self._record("add_node", node)
        checks = [{"name": "connect", "ok": True, "detail": "10.0.0.9:2222"}]
        return {"node": {**node, "status": "reachable"}, "preflight": checks}

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


async def test_stop_asks_first_and_read_only_hides_it() -> None:
    actions = RecordingActions()
    app = app_with([SNAPSHOT], actions=actions)
    async with app.run_test(size=(140, 40)) as pilot:
        workers = app.screen.query_one(WorkersTable)
        await settle(pilot, app, lambda: workers.row_count == 2)
        workers.focus()
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmDialog)
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
        assert not isinstance(read_only.screen, ConfirmDialog)
        assert "Stop" not in footer_text(read_only) and "Help" in footer_text(read_only)


def record_notes(app: DashboardApp) -> list[tuple[str, str]]:
    """Every notification the app shows, with its severity."""
    notes: list[tuple[str, str]] = []
    notify = app.notify

    def recording(message: str, **kwargs: Any) -> None:
        notes.append((message, kwargs.get("severity", "information")))
        notify(message, **kwargs)

    app.notify = recording  # type: ignore[method-assign]
    return notes


def footer_text(app: DashboardApp) -> str:
    footer = app.screen.query_one("Footer")
    return " ".join(str(key.render()) for key in footer.query("FooterKey"))


async def fleet_ready(pilot: Any, app: DashboardApp) -> WorkersTable:
    workers = app.screen.query_one(WorkersTable)
    await settle(pilot, app, lambda: workers.row_count == 2)
    workers.focus()
    return workers


async def test_restart_asks_first_then_stops_and_starts_the_same_model_on_the_same_node() -> None:
    actions = RecordingActions()
    app = app_with([SNAPSHOT], actions=actions)
    notes = record_notes(app)
    async with app.run_test(size=(140, 40)) as pilot:
        await fleet_ready(pilot, app)
        assert "Stop (drain)" in footer_text(app) and "Restart" in footer_text(app)
        await pilot.press("r")
        assert isinstance(app.screen, ConfirmDialog)
        assert "file:/m/tiny" in app.screen.question and "gpu1" in app.screen.question
        await pilot.press("n")
        await pilot.pause()
        assert actions.calls == []
        await pilot.press("r", "y")
        await settle(pilot, app, lambda: len(actions.calls) == 2)
        assert actions.calls == [("stop", "w-1"), ("start", "gpu1", "file:/m/tiny")]
        await settle(pilot, app, lambda: any("started on gpu1" in m for m, _ in notes))
        assert any("drained and stopped gracefully" in m for m, _ in notes)


async def test_stop_says_it_drains_and_a_failed_stop_is_shown_and_no_start_follows() -> None:
    gone = errors.WorkerNotFound("no running worker 'w-1'")
    actions = RecordingActions(fail={"stop": gone})
    app = app_with([SNAPSHOT], actions=actions)
    notes = record_notes(app)
    async with app.run_test(size=(140, 40)) as pilot:
        await fleet_ready(pilot, app)
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmDialog) and "drains" in app.screen.question
        await pilot.press("y")
        await settle(pilot, app, lambda: any(sev == "error" for _, sev in notes))
        await pilot.press("r", "y")
        await settle(pilot, app, lambda: len([n for n in notes if n[1] == "error"]) == 2)
        assert actions.calls == [("stop", "w-1"), ("stop", "w-1")]
        assert notes[0] == ("stop failed: WORKER_NOT_FOUND: no running worker 'w-1'", "error")
        assert isinstance(app.screen, FleetScreen)


async def open_node(pilot: Any, app: DashboardApp) -> NodeScreen:
    nodes = app.screen.query_one(NodesTable)
    await settle(pilot, app, lambda: nodes.row_count == 2)
    nodes.focus()
    await pilot.press("enter")
    await settle(pilot, app, lambda: isinstance(app.screen, NodeScreen))
    assert isinstance(app.screen, NodeScreen)
    return app.screen


async def test_start_worker_form_validates_the_model_and_asks_first() -> None:
    actions = RecordingActions()
    app = app_with([SNAPSHOT], actions=actions)
    notes = record_notes(app)
    async with app.run_test(size=(140, 40)) as pilot:
        await open_node(pilot, app)
        assert "Start worker" in footer_text(app)
        await pilot.press("w")
        assert isinstance(app.screen, StartWorkerForm)
        model = app.screen.query_one("#model", Input)
        model.value = "bad ref; rm -rf /"
        await pilot.press("enter")
        assert isinstance(app.screen, StartWorkerForm)
        assert "model:" in str(app.screen.query_one("#form-error", Label).render())
        await pilot.press("escape")
        assert isinstance(app.screen, NodeScreen) and actions.calls == []

        for answer in ("n", "y"):
            await pilot.press("w")
            app.screen.query_one("#model", Input).value = "hf:Org/Repo@main"
            await pilot.press("enter")
            assert isinstance(app.screen, ConfirmDialog)
            assert app.screen.question == "Start a worker for hf:Org/Repo@main on gpu1?"
            await pilot.press(answer)
            if answer == "n":
                await pilot.pause()
                assert actions.calls == [] and isinstance(app.screen, NodeScreen)
        await settle(pilot, app, lambda: actions.calls == [("start", "gpu1", "hf:Org/Repo@main")])
        await settle(
            pilot,
            app,
            lambda: ("worker for hf:Org/Repo@main started on gpu1", "information") in notes,
        )


class FailingStart(RecordingActions):
    def start_worker(self, node: str, model_ref: str) -> dict[str, Any]:
        self._record("start", node, model_ref)
        return {
            "events": [{"type": "error", "code": "MODEL_NOT_FOUND", "message": "no such model"}]
        }


async def test_a_start_that_fails_in_the_stream_is_shown() -> None:
    actions = FailingStart()
    app = app_with([SNAPSHOT], actions=actions)
    notes = record_notes(app)
    async with app.run_test(size=(140, 40)) as pilot:
        await open_node(pilot, app)
        await pilot.press("w")
        app.screen.query_one("#model", Input).value = "hf:Org/Missing"
        await pilot.press("enter", "y")
        await settle(pilot, app, lambda: bool(notes))
        assert notes == [("start on gpu1 failed: MODEL_NOT_FOUND: no such model", "error")]
        assert isinstance(app.screen, NodeScreen)


def fill_add_node(form: AddNodeForm, **values: str) -> None:
    for input_id, value in values.items():
        form.query_one(f"#{input_id}", Input).value = value


async def test_add_node_form_validates_asks_and_shows_the_preflight() -> None:
    actions = RecordingActions()
    app = app_with([SNAPSHOT], actions=actions)
    notes = record_notes(app)
    async with app.run_test(size=(140, 40)) as pilot:
        await fleet_ready(pilot, app)
        assert "Add node" in footer_text(app)
        await pilot.press("a")
        form = app.screen
        assert isinstance(form, AddNodeForm)
        form.query_one("#name", Input).focus()
        await pilot.press("enter")
        error = str(form.query_one("#form-error", Label).render())
        assert "name:" in error and "host:" in error and "user:" in error
        assert isinstance(app.screen, AddNodeForm)
        fill_add_node(form, name="gpu3", host="10.0.0.9", port="2222", user="bob")
        fill_add_node(form, key="/keys/id_ed25519", install="/srv/rbee")
        form.query_one("#accept", Checkbox).value = True
        await pilot.press("enter")
        assert isinstance(app.screen, ConfirmDialog)
        assert "gpu3 (bob@10.0.0.9:2222)" in app.screen.question
        await pilot.press("y")
        await settle(pilot, app, lambda: bool(notes))
        assert actions.calls == [
            (
                "add_node",
                {
                    "node_name": "gpu3",
                    "ssh_host": "10.0.0.9",
                    "ssh_port": 2222,
                    "ssh_user": "bob",
                    "ssh_key_path": "/keys/id_ed25519",
                    "install_path": "/srv/rbee",
                    "accept_new_host_key": True,
                },
            )
        ]
        assert notes == [
            ("added node gpu3 (reachable); preflight: connect ok (10.0.0.9:2222)", "information")
        ]


async def test_add_node_error_is_one_line_and_a_cancelled_form_calls_nothing() -> None:
    refused = errors.SshAuthFailed(
        "bob@10.0.0.9 refused the key", check="authenticate", suggestion="add the public key"
    )
    actions = RecordingActions(fail={"add_node": refused})
    app = app_with([SNAPSHOT], actions=actions)
    notes = record_notes(app)
    async with app.run_test(size=(140, 40)) as pilot:
        await fleet_ready(pilot, app)
        await pilot.press("a")
        await pilot.press("escape")
        assert isinstance(app.screen, FleetScreen)
        await pilot.press("a")
        fill_add_node(app.screen, name="gpu3", host="10.0.0.9", user="bob")  # type: ignore[arg-type]
        app.screen.query_one("#user", Input).focus()
        await pilot.press("enter", "n")
        await pilot.pause()
        assert actions.calls == [] and isinstance(app.screen, FleetScreen)
        await pilot.press("a")
        fill_add_node(app.screen, name="gpu3", host="10.0.0.9", user="bob")  # type: ignore[arg-type]
        await pilot.press("enter", "y")
        await settle(pilot, app, lambda: bool(notes))
        assert actions.calls[0][1]["ssh_port"] == 22 and actions.calls[0][1]["ssh_key_path"] is None
        assert notes == [
            (
                "add node failed: SSH_AUTH_FAILED: bob@10.0.0.9 refused the key "
                "(add the public key)",
                "error",
            )
        ]
        assert isinstance(app.screen, FleetScreen)


async def test_palette_offers_the_actions_and_read_only_hides_them_all() -> None:
    actions = RecordingActions()
    app = app_with([SNAPSHOT], actions=actions)
    async with app.run_test(size=(140, 40)) as pilot:
        await fleet_ready(pilot, app)
        texts = [text for text, _ in app.commands()]
        for wanted in (
            "Add node",
            "Start worker on node gpu2",
            "Stop (drain) worker w-2",
            "Restart worker w-1",
        ):
            assert wanted in texts
        await pilot.press("ctrl+p")
        await pilot.press(*"restart", "space", *"worker", "space", "w", "minus", "2")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await settle(pilot, app, lambda: isinstance(app.screen, ConfirmDialog))
        assert "Restart worker w-2?" in app.screen.question  # type: ignore[attr-defined]

    read_only = app_with([SNAPSHOT], actions=RecordingActions(), read_only=True)
    async with read_only.run_test(size=(140, 40)) as pilot:
        await fleet_ready(pilot, read_only)
        texts = [text for text, _ in read_only.commands()]
        assert "Open worker w-1" in texts
        assert not [t for t in texts if t.split()[0] in ("Add", "Start", "Stop", "Restart")]
        footer = footer_text(read_only)
        assert "Help" in footer
        for hidden in ("Stop", "Restart", "Add node"):
            assert hidden not in footer
        for key in ("s", "r", "a"):
            await pilot.press(key)
            await pilot.pause()
            assert isinstance(read_only.screen, FleetScreen)
        read_only.screen.query_one(NodesTable).focus()
        await pilot.press("enter")
        await settle(pilot, read_only, lambda: isinstance(read_only.screen, NodeScreen))
        assert "Start worker" not in footer_text(read_only)
        await pilot.press("w")
        await pilot.pause()
        assert isinstance(read_only.screen, NodeScreen)
        for message in (AddNode(), StartWorkerOn("gpu1"), RestartWorker("w-1")):
            read_only.post_message(message)
        await pilot.pause()
        assert isinstance(read_only.screen, NodeScreen)


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


@pytest.mark.parametrize("screen", ["fleet", "node", "add-node"])
def test_snapshots(snap_compare: Any, screen: str) -> None:
    events = [SNAPSHOT]

    async def run_before(pilot: Any) -> None:
        app = pilot.app
        await settle(pilot, app, lambda: app.screen.query_one(NodesTable).row_count == 2)
        if screen == "node":
            app.screen.query_one(NodesTable).focus()
            await pilot.press("enter")
            await settle(pilot, app, lambda: isinstance(app.screen, NodeScreen))
            await pilot.pause(0.4)
        if screen == "add-node":
            app.screen.query_one(WorkersTable).focus()
            await pilot.press("a")
            await settle(pilot, app, lambda: isinstance(app.screen, AddNodeForm))
            for field in app.screen.query(Input):
                field.cursor_blink = False  # the same picture every run
            await pilot.pause(0.4)

    app = app_with(events, actions=RecordingActions(), queen_url="http://127.0.0.1:8080")
    assert snap_compare(app, terminal_size=(140, 36), run_before=run_before)
