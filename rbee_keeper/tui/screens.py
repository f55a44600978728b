"""Screens: the fleet, one node, one worker, help, and a yes/no confirmation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Header, Label, Log, Sparkline, Static

from rbee_keeper.tui.widgets import GpusTable, NodesTable, Totals, WorkersTable

if TYPE_CHECKING:
    from rbee_keeper.tui.app import DashboardApp


class FleetView(Screen[None]):
    """Every node and every worker; Enter drills into the selected row."""

    BINDINGS = [
        Binding("s", "stop_worker", "Stop worker"),
        Binding("question_mark", "app.push_screen('help')", "Help"),
        Binding("q", "app.quit", "Quit"),
    ]

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

    def action_stop_worker(self) -> None:
        table = self.query_one(WorkersTable)
        if self.focused is table and table.row_count:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
            if key:
                self.dash.confirm_stop(key)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop_worker" and self.dash.read_only:
            return False
        return True


class NodeView(Screen[None]):
    """One node: its GPUs and its workers."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
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


class WorkerView(Screen[None]):
    """One worker: state, live requests, a tokens-per-second sparkline, its log."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("s", "stop", "Stop"),
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

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop" and self.dash.read_only:
            return False
        return True


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


HELP = """\
rbee dashboard

  Fleet     arrows/tab  move between nodes and workers
            enter       open the selected node or worker
            s           stop the selected worker (asks first)
  Node      enter       open the selected worker
  Worker    s           stop it (asks first)   l  reload its log
  Anywhere  escape      back     ?  this help     ctrl+p  command palette     q  quit

With --read-only the actions are hidden. When the queen goes away the top line
says so and the dashboard reconnects by itself.
"""


class Help(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "app.pop_screen", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(HELP)
