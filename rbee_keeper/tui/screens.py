"""The full screens: the fleet, one node, one worker.

Each holds the fleet in a reactive attribute that the app binds to its own
(`data_bind`), and a watcher redraws the widgets when it changes. What the user
asks for (open, stop, restart, start, add) is posted as a message for the app.
"""

from __future__ import annotations

from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label, Log, Sparkline, Static

from rbee_keeper.tui.fleet import Fleet
from rbee_keeper.tui.messages import (
    AddNode,
    LoadLog,
    LogTail,
    OpenNode,
    OpenWorker,
    RestartWorker,
    StartWorkerOn,
    StopWorker,
)
from rbee_keeper.tui.widgets import (
    GpusTable,
    NodesTable,
    Totals,
    WorkersTable,
    describe_devices,
)


class LiveScreen(Screen[None]):
    """A screen that shows part of the live fleet; hidden ones skip redraws and
    catch up when they come back."""

    fleet: reactive[Fleet] = reactive(Fleet, init=False)
    ACTIONS: ClassVar[frozenset[str]] = frozenset()  # hidden with --read-only

    def __init__(self, *, read_only: bool) -> None:
        super().__init__()
        self.read_only = read_only

    def watch_fleet(self, fleet: Fleet) -> None:
        if self.is_current and self.is_mounted:
            self.show(fleet)

    def on_screen_resume(self) -> None:
        self.call_after_refresh(lambda: self.show(self.fleet))

    def show(self, fleet: Fleet) -> None:
        raise NotImplementedError

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (action in self.ACTIONS and self.read_only)


class FleetScreen(LiveScreen):
    """Every node and every worker; Enter drills into the selected row."""

    BINDINGS = [
        Binding("s", "stop_worker", "Stop (drain)"),
        Binding("r", "restart_worker", "Restart"),
        Binding("a", "add_node", "Add node"),
        Binding("question_mark", "app.push_screen('help')", "Help"),
        Binding("q", "app.quit", "Quit"),
    ]
    ACTIONS = frozenset({"stop_worker", "restart_worker", "add_node"})

    def __init__(self, queen_url: str, *, read_only: bool) -> None:
        super().__init__(read_only=read_only)
        self.queen_url = queen_url

    def compose(self) -> ComposeResult:
        yield Header()
        yield Totals(id="totals")
        with Vertical(id="fleet"):
            yield Label("Nodes", classes="title")
            yield NodesTable(id="nodes")
            yield Label("Workers", classes="title")
            yield WorkersTable(id="workers")
        yield Footer()

    def show(self, fleet: Fleet) -> None:
        self.query_one(Totals).show(fleet, self.queen_url)
        self.query_one(NodesTable).show(fleet)
        self.query_one(WorkersTable).show(sorted(fleet.workers.values(), key=lambda w: w.worker_id))

    @on(DataTable.RowSelected)
    def drill_down(self, event: DataTable.RowSelected) -> None:
        # Enter (or a click) on a row opens it.
        key = event.row_key.value
        if isinstance(event.data_table, NodesTable) and key:
            self.post_message(OpenNode(key))
        elif isinstance(event.data_table, WorkersTable) and key:
            self.post_message(OpenWorker(key))

    def selected_worker(self) -> str | None:
        table = self.query_one(WorkersTable)
        if self.focused is table and table.row_count:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return None

    def action_stop_worker(self) -> None:
        if key := self.selected_worker():
            self.post_message(StopWorker(key))

    def action_restart_worker(self) -> None:
        if key := self.selected_worker():
            self.post_message(RestartWorker(key))

    def action_add_node(self) -> None:
        self.post_message(AddNode())


class NodeScreen(LiveScreen):
    """One node: its GPUs and its workers."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("w", "start_worker", "Start worker"),
        Binding("question_mark", "app.push_screen('help')", "Help"),
    ]
    ACTIONS = frozenset({"start_worker"})

    def __init__(self, node: str, *, read_only: bool) -> None:
        super().__init__(read_only=read_only)
        self.node = node

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="node-summary")
        yield Label("GPUs", classes="title")
        yield GpusTable(id="gpus")
        yield Label("Workers", classes="title")
        yield WorkersTable(id="node-workers")
        yield Footer()

    def show(self, fleet: Fleet) -> None:
        node: dict[str, Any] = fleet.nodes.get(self.node, {"status": "removed"})
        summary = [
            self.node,
            f"{node.get('ssh_user', '')}@{node.get('ssh_host', '')}",
            str(node.get("status")),
            f"backends: {', '.join(node.get('backends') or []) or 'none'}",
            f"devices: {describe_devices(node.get('devices') or {})}",
        ]
        self.query_one("#node-summary", Static).update(" │ ".join(summary))
        self.query_one(GpusTable).show(list(node.get("gpus") or []))
        self.query_one(WorkersTable).show(fleet.workers_on(self.node))

    @on(DataTable.RowSelected, "WorkersTable")
    def open_worker(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.post_message(OpenWorker(event.row_key.value))

    def action_start_worker(self) -> None:
        self.post_message(StartWorkerOn(self.node))


class WorkerScreen(LiveScreen):
    """One worker: state, live requests, a tokens-per-second sparkline, its log."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("s", "stop", "Stop (drain)"),
        Binding("r", "restart", "Restart"),
        Binding("l", "load_log", "Reload log"),
        Binding("question_mark", "app.push_screen('help')", "Help"),
    ]
    ACTIONS = frozenset({"stop", "restart"})

    log_lines: reactive[tuple[str, ...]] = reactive((), init=False)

    def __init__(self, worker_id: str, *, read_only: bool) -> None:
        super().__init__(read_only=read_only)
        self.worker_id = worker_id

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
        self.action_load_log()

    def show(self, fleet: Fleet) -> None:
        worker = fleet.workers.get(self.worker_id)
        if worker is None:
            self.query_one("#worker-summary", Static).update(f"{self.worker_id}: stopped")
            return
        data = worker.data
        ttft = f"{worker.last_ttft_ms:.0f} ms" if worker.last_ttft_ms is not None else "-"
        summary = [
            self.worker_id,
            f"node {data.get('node')}",
            str(data.get("state")),
            f"model {data.get('model_ref')}",
            f"requests done {worker.requests_done}",
            f"last time to first token {ttft}",
        ]
        self.query_one("#worker-summary", Static).update(" │ ".join(summary))
        self.query_one(Sparkline).data = list(worker.rates) or [0.0]
        jobs = ", ".join(worker.in_flight) or "none"
        self.query_one("#requests", Static).update(f"live requests: {jobs}")

    @on(LogTail)
    def got_log(self, message: LogTail) -> None:
        self.log_lines = message.lines

    def watch_log_lines(self, lines: tuple[str, ...]) -> None:
        log = self.query_one(Log)
        log.clear()
        log.write_lines(lines)

    def action_load_log(self) -> None:
        self.post_message(LoadLog(self))

    def action_stop(self) -> None:
        self.post_message(StopWorker(self.worker_id))

    def action_restart(self) -> None:
        self.post_message(RestartWorker(self.worker_id))
