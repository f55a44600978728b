"""Screens: the fleet, one node, one worker, help, a yes/no confirmation, and the
two forms (start a worker, add a node)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.validation import Integer, Regex, Validator
from textual.widgets import (
    Button,
    Checkbox,
    DataTable,
    Footer,
    Header,
    Input,
    Label,
    Log,
    Sparkline,
    Static,
)

from rbee_keeper.tui.widgets import GpusTable, NodesTable, Totals, WorkersTable
from rbee_queen.validation import HOSTNAME, IDENTIFIER, MODEL_REF, SSH_USER

if TYPE_CHECKING:
    from rbee_keeper.tui.app import DashboardApp


class FleetView(Screen[None]):
    """Every node and every worker; Enter drills into the selected row."""

    BINDINGS = [
        Binding("s", "stop_worker", "Stop (drain)"),
        Binding("r", "restart_worker", "Restart"),
        Binding("a", "add_node", "Add node"),
        Binding("question_mark", "app.push_screen('help')", "Help"),
        Binding("q", "app.quit", "Quit"),
    ]
    ACTIONS = frozenset({"stop_worker", "restart_worker", "add_node"})

    @property
    def dash(self) -> DashboardApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Totals(id="totals")
        with Vertical(id="fleet"):
            yield Label("Nodes", classes="title")
            yield NodesTable(id="nodes")
            yield Label("Workers", classes="title")
            yield WorkersTable(id="workers")
        yield Footer()

    def on_screen_resume(self) -> None:
        self.call_after_refresh(self.refresh_view)

    def refresh_view(self) -> None:
        fleet = self.dash.fleet
        self.query_one(Totals).show(fleet, self.dash.queen_url)
        self.query_one(NodesTable).show(fleet)
        self.query_one(WorkersTable).show(sorted(fleet.workers.values(), key=lambda w: w.worker_id))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        # Enter (or a click) on a row drills down into it.
        key = event.row_key.value
        if isinstance(event.data_table, NodesTable) and key:
            self.app.push_screen(NodeView(key))
        elif isinstance(event.data_table, WorkersTable) and key:
            self.app.push_screen(WorkerView(key))

    def selected_worker(self) -> str | None:
        table = self.query_one(WorkersTable)
        if self.focused is table and table.row_count:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return None

    def action_stop_worker(self) -> None:
        if key := self.selected_worker():
            self.dash.confirm_stop(key)

    def action_restart_worker(self) -> None:
        if key := self.selected_worker():
            self.dash.confirm_restart(key)

    def action_add_node(self) -> None:
        self.dash.open_add_node_form()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (action in self.ACTIONS and self.dash.read_only)


class NodeView(Screen[None]):
    """One node: its GPUs and its workers."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("w", "start_worker", "Start worker"),
        Binding("question_mark", "app.push_screen('help')", "Help"),
    ]

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    @property
    def dash(self) -> DashboardApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="node-summary")
        yield Label("GPUs", classes="title")
        yield GpusTable(id="gpus")
        yield Label("Workers", classes="title")
        yield WorkersTable(id="node-workers")
        yield Footer()

    def on_mount(self) -> None:
        self.call_after_refresh(self.refresh_view)

    def refresh_view(self) -> None:
        node: dict[str, Any] = self.dash.fleet.nodes.get(self.node, {"status": "removed"})
        devices = node.get("devices") or {}
        self.query_one("#node-summary", Static).update(
            f"{self.node}  {node.get('ssh_user', '')}@{node.get('ssh_host', '')}  "
            f"status {node.get('status')}  backends {', '.join(node.get('backends') or [])}  "
            f"devices {devices}"
        )
        self.query_one(GpusTable).show(list(node.get("gpus") or []))
        self.query_one(WorkersTable).show(self.dash.fleet.workers_on(self.node))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if isinstance(event.data_table, WorkersTable) and event.row_key.value:
            self.app.push_screen(WorkerView(event.row_key.value))

    def action_start_worker(self) -> None:
        self.dash.open_start_form(self.node)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (action == "start_worker" and self.dash.read_only)


class WorkerView(Screen[None]):
    """One worker: state, live requests, a tokens-per-second sparkline, its log."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("s", "stop", "Stop (drain)"),
        Binding("r", "restart", "Restart"),
        Binding("l", "load_log", "Reload log"),
        Binding("question_mark", "app.push_screen('help')", "Help"),
    ]

    def __init__(self, worker_id: str) -> None:
        super().__init__()
        self.worker_id = worker_id

    @property
    def dash(self) -> DashboardApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="worker-summary")
        yield Label("Tokens per second (last requests)", classes="title")
        yield Sparkline([], id="rates")
        yield Static(id="requests")
        yield Label("Log", classes="title")
        yield Log(id="log", max_lines=500)
        yield Footer()

    def on_mount(self) -> None:
        self.call_after_refresh(self.refresh_view)
        self.action_load_log()

    def refresh_view(self) -> None:
        view = self.dash.fleet.workers.get(self.worker_id)
        if view is None:
            self.query_one("#worker-summary", Static).update(f"{self.worker_id}: stopped")
            return
        data = view.data
        ttft = f"{view.last_ttft_ms:.0f} ms" if view.last_ttft_ms is not None else "-"
        self.query_one("#worker-summary", Static).update(
            f"{self.worker_id}  node {data.get('node')}  state {data.get('state')}  "
            f"model {data.get('model_ref')}  requests done {view.requests_done}  "
            f"last time to first token {ttft}"
        )
        self.query_one(Sparkline).data = list(view.rates) or [0.0]
        jobs = ", ".join(view.in_flight) or "none"
        self.query_one("#requests", Static).update(f"live requests: {jobs}")

    def action_load_log(self) -> None:
        view = self.dash.fleet.workers.get(self.worker_id)
        node = str(view.data.get("node")) if view else ""
        self.dash.load_log(self, node)

    def show_log(self, lines: list[str]) -> None:
        log = self.query_one(Log)
        log.clear()
        log.write_lines(lines)

    def action_stop(self) -> None:
        self.dash.confirm_stop(self.worker_id)

    def action_restart(self) -> None:
        self.dash.confirm_restart(self.worker_id)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (action in ("stop", "restart") and self.dash.read_only)


class Confirm(ModalScreen[bool]):
    """Yes or no, keyboard first: y / n, Enter on the focused button, or a click."""

    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.question)
            with Horizontal():
                yield Button("Yes (y)", variant="error", id="yes")
                yield Button("No (n)", variant="primary", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


def field(label: str, widget: Input) -> Horizontal:
    return Horizontal(Label(label), widget, classes="field")


class Form(ModalScreen[Any]):
    """A small form: Enter (in any field) or the submit button checks every field,
    shows what is wrong, or closes with the answer; escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def buttons(self, submit: str) -> ComposeResult:
        yield Label("", id="form-error")
        with Horizontal():
            yield Button(submit, variant="primary", id="submit")
            yield Button("Cancel", id="cancel")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "submit":
            self.submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def problems(self) -> list[str]:
        """Every field's validation failures, one line each."""
        found = []
        for widget in self.query(Input):
            result = widget.validate(widget.value.strip())
            if result is not None and not result.is_valid:
                found.append(f"{widget.name}: {'; '.join(result.failure_descriptions)}")
        return found

    def submit(self) -> None:
        if problems := self.problems():
            self.query_one("#form-error", Label).update("\n".join(problems))
            return
        self.dismiss(self.answer())

    def value(self, input_id: str) -> str:
        return self.query_one(f"#{input_id}", Input).value.strip()

    def answer(self) -> Any:
        raise NotImplementedError


def pattern(regex: Any, what: str) -> list[Validator]:
    return [Regex(regex, failure_description=what)]


class StartWorkerForm(Form):
    """Which model to start a worker for on one node."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(f"Start a worker on {self.node}", classes="title")
            yield field(
                "model",
                Input(
                    placeholder="hf:Org/Repo, file:/path/to/model",
                    id="model",
                    name="model",
                    validators=pattern(MODEL_REF, "1 to 512 of A-Z a-z 0-9 - _ / : . @"),
                ),
            )
            yield from self.buttons("Start")

    def answer(self) -> str:
        return self.value("model")


class AddNodeForm(Form):
    """The fields of `rbee-keeper setup add-node`."""

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Add a node (the queen runs the preflight first)", classes="title")
            yield field(
                "name",
                Input(
                    id="name",
                    name="name",
                    validators=pattern(IDENTIFIER, "1 to 64 of A-Z a-z 0-9 - _"),
                ),
            )
            yield field(
                "host",
                Input(
                    placeholder="address or ~/.ssh/config alias",
                    id="host",
                    name="host",
                    validators=pattern(HOSTNAME, "a host name or address"),
                ),
            )
            yield field(
                "port",
                Input(
                    "22",
                    id="port",
                    name="port",
                    type="integer",
                    validators=[Integer(1, 65535, failure_description="1 to 65535")],
                ),
            )
            yield field(
                "user",
                Input(id="user", name="user", validators=pattern(SSH_USER, "a user name")),
            )
            yield field("key path", Input(placeholder="optional", id="key", name="key path"))
            yield field(
                "install path",
                Input("~/.rbee", id="install", name="install path", validators=[NonEmpty()]),
            )
            yield Checkbox("accept a new host key (trust on first use)", id="accept")
            yield from self.buttons("Add")

    def answer(self) -> dict[str, Any]:
        key = self.value("key")
        return {
            "node_name": self.value("name"),
            "ssh_host": self.value("host"),
            "ssh_port": int(self.value("port")),
            "ssh_user": self.value("user"),
            # As the CLI sends it: absolute, on this machine's terms.
            "ssh_key_path": str(Path(key).expanduser().absolute()) if key else None,
            "install_path": self.value("install"),
            "accept_new_host_key": self.query_one("#accept", Checkbox).value,
        }


class NonEmpty(Validator):
    def validate(self, value: str) -> Any:
        return self.success() if value.strip() else self.failure("required")


HELP = """\
rbee dashboard

  Fleet     arrows/tab  move between nodes and workers
            enter       open the selected node or worker
            s           stop the selected worker: it drains, then stops (asks first)
            r           restart the selected worker (same model, same node; asks first)
            a           add a node (a form; the queen runs the preflight)
  Node      enter       open the selected worker
            w           start a worker for a model on this node (a form; asks first)
  Worker    s  stop it (drains)    r  restart it    l  reload its log
  Anywhere  escape      back     ?  this help     ctrl+p  command palette     q  quit

The queen's stop drains: the worker takes no new requests, gets SIGTERM, and is
killed only if it outlives the grace period. Every action asks first; with
--read-only the actions are hidden. When the queen goes away the top line
says so and the dashboard reconnects by itself.
"""


class Help(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "app.pop_screen", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(HELP)
