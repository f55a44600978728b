"""The dashboard's actions (stop, restart, start a worker, add a node, the
palette), driven with Textual's Pilot over a fleet recorded from a real queen:
its snapshot of the loopback node with one idle worker of the tiny model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from textual.widgets import Checkbox, Input, Label

from rbee_keeper.tui.app import DashboardApp
from rbee_keeper.tui.dialogs import AddNodeForm, ConfirmDialog, StartWorkerForm
from rbee_keeper.tui.messages import AddNode, RestartWorker, StartWorkerOn
from rbee_keeper.tui.screens import FleetScreen, NodeScreen
from rbee_keeper.tui.widgets import NodesTable
from rbee_queen import errors
from tests.test_dashboard_helpers import (
    RecordingActions,
    app_with,
    fleet_ready,
    footer_text,
    keys,
    record_notes,
    settle,
)

if TYPE_CHECKING:
    from tests.plugins.queen_events import QueenRecording

# Not imported above: the plugin registers first, so pytest rewrites its asserts.
pytest_plugins = ["tests.plugins.queen_events"]


@pytest.fixture
def live(queen_recording: QueenRecording) -> list[dict[str, Any]]:
    """The events a dashboard got connecting while the worker was up."""
    return [queen_recording.live_snapshot]


async def test_stop_asks_first_and_read_only_hides_it(
    live: list[dict[str, Any]], queen_recording: QueenRecording
) -> None:
    actions = RecordingActions()
    app = app_with(live, actions=actions)
    async with app.run_test(size=(140, 40)) as pilot:
        await fleet_ready(pilot, app)
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("n")
        assert actions.stopped == []
        await pilot.press("s")
        await pilot.press("y")
        await settle(pilot, app, lambda: actions.stopped == [queen_recording.worker_id])

    read_only = app_with(live, actions=RecordingActions(), read_only=True)
    async with read_only.run_test(size=(140, 40)) as pilot:
        await fleet_ready(pilot, read_only)
        await pilot.press("s")
        await pilot.pause(0.2)
        assert not isinstance(read_only.screen, ConfirmDialog)
        assert "Stop" not in footer_text(read_only) and "Help" in footer_text(read_only)


async def test_restart_asks_first_then_stops_and_starts_the_same_model_on_the_same_node(
    live: list[dict[str, Any]], queen_recording: QueenRecording
) -> None:
    worker_id, node, model = (
        queen_recording.worker_id,
        queen_recording.node,
        queen_recording.model_ref,
    )
    actions = RecordingActions()
    app = app_with(live, actions=actions)
    notes = record_notes(app)
    async with app.run_test(size=(140, 40)) as pilot:
        await fleet_ready(pilot, app)
        assert "Stop (drain)" in footer_text(app) and "Restart" in footer_text(app)
        await pilot.press("r")
        assert isinstance(app.screen, ConfirmDialog)
        assert model in app.screen.question and node in app.screen.question
        await pilot.press("n")
        await pilot.pause()
        assert actions.calls == []
        await pilot.press("r", "y")
        await settle(pilot, app, lambda: len(actions.calls) == 2)
        assert actions.calls == [("stop", worker_id), ("start", node, model)]
        await settle(pilot, app, lambda: any(f"started on {node}" in m for m, _ in notes))
        assert any("drained and stopped gracefully" in m for m, _ in notes)


async def test_stop_says_it_drains_and_a_failed_stop_is_shown_and_no_start_follows(
    live: list[dict[str, Any]], queen_recording: QueenRecording
) -> None:
    worker_id = queen_recording.worker_id
    gone = errors.WorkerNotFound(f"no running worker {worker_id!r}")
    actions = RecordingActions(fail={"stop": gone})
    app = app_with(live, actions=actions)
    notes = record_notes(app)
    async with app.run_test(size=(140, 40)) as pilot:
        await fleet_ready(pilot, app)
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmDialog) and "drains" in app.screen.question
        await pilot.press("y")
        await settle(pilot, app, lambda: any(sev == "error" for _, sev in notes))
        await pilot.press("r", "y")
        await settle(pilot, app, lambda: len([n for n in notes if n[1] == "error"]) == 2)
        assert actions.calls == [("stop", worker_id), ("stop", worker_id)]
        assert notes[0] == (
            f"stop failed: WORKER_NOT_FOUND: no running worker {worker_id!r}",
            "error",
        )
        assert isinstance(app.screen, FleetScreen)


async def open_node(pilot: Any, app: DashboardApp) -> NodeScreen:
    nodes = app.screen.query_one(NodesTable)
    await settle(pilot, app, lambda: nodes.row_count == 1)
    nodes.focus()
    await pilot.press("enter")
    await settle(pilot, app, lambda: isinstance(app.screen, NodeScreen))
    assert isinstance(app.screen, NodeScreen)
    return app.screen


async def test_start_worker_form_validates_the_model_and_asks_first(
    live: list[dict[str, Any]], queen_recording: QueenRecording
) -> None:
    node = queen_recording.node
    actions = RecordingActions()
    app = app_with(live, actions=actions)
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
            assert app.screen.question == f"Start a worker for hf:Org/Repo@main on {node}?"
            await pilot.press(answer)
            if answer == "n":
                await pilot.pause()
                assert actions.calls == [] and isinstance(app.screen, NodeScreen)
        await settle(pilot, app, lambda: actions.calls == [("start", node, "hf:Org/Repo@main")])
        started = (f"worker for hf:Org/Repo@main started on {node}", "information")
        await settle(pilot, app, lambda: started in notes)


class FailingStart(RecordingActions):
    def start_worker(self, node: str, model_ref: str) -> dict[str, Any]:
        self._record("start", node, model_ref)
        return {
            "events": [{"type": "error", "code": "MODEL_NOT_FOUND", "message": "no such model"}]
        }


async def test_a_start_that_fails_in_the_stream_is_shown(
    live: list[dict[str, Any]], queen_recording: QueenRecording
) -> None:
    app = app_with(live, actions=FailingStart())
    notes = record_notes(app)
    async with app.run_test(size=(140, 40)) as pilot:
        await open_node(pilot, app)
        await pilot.press("w")
        app.screen.query_one("#model", Input).value = "hf:Org/Missing"
        await pilot.press("enter", "y")
        await settle(pilot, app, lambda: bool(notes))
        node = queen_recording.node
        assert notes == [(f"start on {node} failed: MODEL_NOT_FOUND: no such model", "error")]
        assert isinstance(app.screen, NodeScreen)


def fill_add_node(form: Any, **values: str) -> None:
    for input_id, value in values.items():
        form.query_one(f"#{input_id}", Input).value = value


async def test_add_node_form_validates_asks_and_shows_the_preflight(
    live: list[dict[str, Any]],
) -> None:
    actions = RecordingActions()
    app = app_with(live, actions=actions)
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
        body = {
            "node_name": "gpu3",
            "ssh_host": "10.0.0.9",
            "ssh_port": 2222,
            "ssh_user": "bob",
            "ssh_key_path": "/keys/id_ed25519",
            "install_path": "/srv/rbee",
            "accept_new_host_key": True,
        }
        assert actions.calls == [("add_node", body)]
        assert notes == [
            ("added node gpu3 (reachable); preflight: connect ok (10.0.0.9:2222)", "information")
        ]


async def test_add_node_error_is_one_line_and_a_cancelled_form_calls_nothing(
    live: list[dict[str, Any]],
) -> None:
    refused = errors.SshAuthFailed(
        "bob@10.0.0.9 refused the key", check="authenticate", suggestion="add the public key"
    )
    actions = RecordingActions(fail={"add_node": refused})
    app = app_with(live, actions=actions)
    notes = record_notes(app)
    async with app.run_test(size=(140, 40)) as pilot:
        await fleet_ready(pilot, app)
        await pilot.press("a")
        await pilot.press("escape")
        assert isinstance(app.screen, FleetScreen)
        await pilot.press("a")
        fill_add_node(app.screen, name="gpu3", host="10.0.0.9", user="bob")
        app.screen.query_one("#user", Input).focus()
        await pilot.press("enter", "n")
        await pilot.pause()
        assert actions.calls == [] and isinstance(app.screen, FleetScreen)
        await pilot.press("a")
        fill_add_node(app.screen, name="gpu3", host="10.0.0.9", user="bob")
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


async def test_palette_offers_the_actions(
    live: list[dict[str, Any]], queen_recording: QueenRecording
) -> None:
    worker_id, node = queen_recording.worker_id, queen_recording.node
    app = app_with(live, actions=RecordingActions())
    async with app.run_test(size=(140, 40)) as pilot:
        await fleet_ready(pilot, app)
        texts = [text for text, _ in app.commands()]
        for wanted in (
            "Add node",
            f"Start worker on node {node}",
            f"Stop (drain) worker {worker_id}",
            f"Restart worker {worker_id}",
        ):
            assert wanted in texts
        await pilot.press("ctrl+p")
        await pilot.press(*keys(f"restart worker {worker_id}"))
        await pilot.pause(0.5)
        await pilot.press("enter")
        await settle(pilot, app, lambda: isinstance(app.screen, ConfirmDialog))
        assert f"Restart worker {worker_id}?" in app.screen.question  # type: ignore[attr-defined]


async def test_read_only_hides_every_action(
    live: list[dict[str, Any]], queen_recording: QueenRecording
) -> None:
    worker_id, node = queen_recording.worker_id, queen_recording.node
    read_only = app_with(live, actions=RecordingActions(), read_only=True)
    async with read_only.run_test(size=(140, 40)) as pilot:
        await fleet_ready(pilot, read_only)
        texts = [text for text, _ in read_only.commands()]
        assert f"Open worker {worker_id}" in texts
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
        for message in (AddNode(), StartWorkerOn(node), RestartWorker(worker_id)):
            read_only.post_message(message)
        await pilot.pause()
        assert isinstance(read_only.screen, NodeScreen)
