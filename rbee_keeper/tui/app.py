"""The dashboard app. `create_app()` is the factory the CLI and the tests call.

Events arrive on an async worker and are applied to the `Fleet` picture, the
app's reactive `fleet`; at most a few times a second its watchers (the screens,
bound with `data_bind`) redraw, however many events arrive, which keeps a fleet
of hundreds of workers smooth. The screens ask for actions with messages
(rbee_keeper.tui.messages), handled here with `@on`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any

from textual import on, work
from textual.app import App
from textual.command import Hit, Hits, Provider
from textual.message import Message
from textual.reactive import reactive

from rbee_keeper.client import error_from_event
from rbee_keeper.tui.dialogs import AddNodeForm, ConfirmDialog, HelpScreen, StartWorkerForm
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
from rbee_keeper.tui.screens import FleetScreen, LiveScreen, NodeScreen, WorkerScreen
from rbee_keeper.tui.source import EventSource, FleetActions
from rbee_queen.errors import RbeeError

REDRAW_INTERVAL_S = 0.25
RECONNECT_BACKOFF_S = (0.5, 1.0, 2.0, 4.0)


class FleetCommands(Provider):
    """Command palette: open any node or worker; unless read-only, stop (drain) or
    restart a worker, start a worker on a node, add a node."""

    async def search(self, query: str) -> Hits:
        app = self.app
        assert isinstance(app, DashboardApp)
        matcher = self.matcher(query)
        for text, message in app.commands():
            if (score := matcher.match(text)) > 0:
                yield Hit(score, matcher.highlight(text), partial(app.post_message, message))


class DashboardApp(App[None]):
    TITLE = "rbee fleet dashboard"
    SUB_TITLE = ""
    CSS_PATH = "styles.tcss"
    COMMANDS = App.COMMANDS | {FleetCommands}
    SCREENS = {"help": HelpScreen}

    # Mutated in place as events arrive; `mutate_reactive` tells the watchers.
    fleet: reactive[Fleet] = reactive(Fleet, init=False)

    def __init__(
        self,
        source_factory: Callable[[], EventSource],
        actions: FleetActions | None,
        *,
        queen_url: str = "",
        read_only: bool = False,
    ) -> None:
        super().__init__()
        self.source_factory = source_factory
        self.actions = actions
        self.queen_url = queen_url
        self.read_only = read_only or actions is None
        self.events_seen = 0
        self._dirty = True

    def on_mount(self) -> None:
        self.push_screen(self.bound(FleetScreen(self.queen_url, read_only=self.read_only)))
        self.set_interval(REDRAW_INTERVAL_S, self._redraw)
        self.follow_events()

    def bound(self, screen: LiveScreen) -> LiveScreen:
        """The screen, its `fleet` following the app's."""
        return screen.data_bind(DashboardApp.fleet)

    # --- the event stream ----------------------------------------------------------

    @work(exclusive=True, group="events")
    async def follow_events(self) -> None:
        # An async worker: quitting cancels it wherever it waits.
        attempt = 0
        while True:
            try:
                async for event in self.source_factory().events():
                    attempt = 0
                    self.apply_event(event)
                reason = "the queen closed the event stream"
            except Exception as exc:  # any failure means: show it, wait, reconnect
                reason = " ".join(str(exc).split()) or type(exc).__name__
            self.link_lost(reason)
            await asyncio.sleep(RECONNECT_BACKOFF_S[min(attempt, len(RECONNECT_BACKOFF_S) - 1)])
            attempt += 1

    def apply_event(self, event: dict[str, Any]) -> None:
        self.fleet.apply(event)
        self.events_seen += 1
        self._dirty = True

    def link_lost(self, reason: str) -> None:
        self.fleet.connected = False
        self.fleet.last_error = reason
        self._dirty = True

    def _redraw(self) -> None:
        if self._dirty:
            self._dirty = False
            self.mutate_reactive(DashboardApp.fleet)

    # --- what the screens ask for ----------------------------------------------------
    # Each action asks first (ConfirmDialog) and does nothing in read-only mode;
    # the calls run on a thread and report by notification, errors included.

    def commands(self) -> list[tuple[str, Message]]:
        """The command palette's entries, each the message its choice posts."""
        found: list[tuple[str, Message]] = []
        if not self.read_only:
            found.append(("Add node", AddNode()))
        for name in sorted(self.fleet.nodes):
            found.append((f"Open node {name}", OpenNode(name)))
            if not self.read_only:
                found.append((f"Start worker on node {name}", StartWorkerOn(name)))
        for worker_id in sorted(self.fleet.workers):
            found.append((f"Open worker {worker_id}", OpenWorker(worker_id)))
            if not self.read_only:
                found.append((f"Stop (drain) worker {worker_id}", StopWorker(worker_id)))
                found.append((f"Restart worker {worker_id}", RestartWorker(worker_id)))
        return found

    @on(OpenNode)
    def open_node(self, message: OpenNode) -> None:
        self.push_screen(self.bound(NodeScreen(message.node, read_only=self.read_only)))

    @on(OpenWorker)
    def open_worker(self, message: OpenWorker) -> None:
        self.push_screen(self.bound(WorkerScreen(message.worker_id, read_only=self.read_only)))

    @property
    def can_act(self) -> bool:
        return not self.read_only and self.actions is not None

    def ask(self, question: str, then: Callable[[], object]) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                then()

        self.push_screen(ConfirmDialog(question), answered)

    @on(StopWorker)
    def confirm_stop(self, message: StopWorker) -> None:
        if self.can_act:
            self.ask(
                f"Stop worker {message.worker_id}? It drains: no new requests, SIGTERM, "
                "killed only if it outlives the grace period.",
                partial(self.stop_worker, message.worker_id),
            )

    @on(RestartWorker)
    def confirm_restart(self, message: RestartWorker) -> None:
        if not self.can_act:
            return
        worker_id = message.worker_id
        worker = self.fleet.workers.get(worker_id)
        node = str(worker.data.get("node") or "") if worker else ""
        model_ref = str(worker.data.get("model_ref") or "") if worker else ""
        if not node or not model_ref:
            self.notify(f"worker {worker_id}: node or model unknown", severity="error")
            return
        self.ask(
            f"Restart worker {worker_id}? It drains and stops, then a worker for "
            f"{model_ref} starts on {node}.",
            partial(self.restart_worker, worker_id, node, model_ref),
        )

    @on(StartWorkerOn)
    def open_start_form(self, message: StartWorkerOn) -> None:
        if not self.can_act:
            return
        node = message.node

        def filled(model_ref: str | None) -> None:
            if model_ref:
                self.ask(
                    f"Start a worker for {model_ref} on {node}?",
                    partial(self.start_worker, node, model_ref),
                )

        self.push_screen(StartWorkerForm(node), filled)

    @on(AddNode)
    def open_add_node_form(self) -> None:
        if not self.can_act:
            return

        def filled(body: dict[str, Any] | None) -> None:
            if body:
                target = f"{body['ssh_user']}@{body['ssh_host']}:{body['ssh_port']}"
                self.ask(
                    f"Add node {body['node_name']} ({target})? The queen connects and "
                    "runs the preflight checks first.",
                    partial(self.add_node, body),
                )

        self.push_screen(AddNodeForm(), filled)

    @on(LoadLog)
    def open_log(self, message: LoadLog) -> None:
        worker = self.fleet.workers.get(message.screen.worker_id)
        if self.actions is not None and worker is not None and worker.data.get("node"):
            self.load_log(message.screen, str(worker.data["node"]))

    def report(self, message: str, *, error: bool = False) -> None:
        """Notify from an action's thread."""
        self.call_from_thread(self.notify, message, severity="error" if error else "information")

    def _stop(self, worker_id: str) -> bool:
        assert self.actions is not None
        try:
            answer = self.actions.stop_worker(worker_id)
        except Exception as exc:
            self.report(f"stop failed: {one_line(exc)}", error=True)
            return False
        how = "forced after the grace period" if answer.get("forced") else "gracefully"
        self.report(f"worker {worker_id} drained and stopped {how}")
        return True

    def _start(self, node: str, model_ref: str) -> None:
        assert self.actions is not None
        try:
            answer = self.actions.start_worker(node, model_ref)
            for event in answer.get("events") or []:
                if isinstance(event, dict) and event.get("type") == "error":
                    raise error_from_event(event)
        except Exception as exc:
            self.report(f"start on {node} failed: {one_line(exc)}", error=True)
            return
        self.report(f"worker for {model_ref} started on {node}")

    @work(thread=True, group="actions")
    def stop_worker(self, worker_id: str) -> None:
        self._stop(worker_id)

    @work(thread=True, group="actions")
    def restart_worker(self, worker_id: str, node: str, model_ref: str) -> None:
        if self._stop(worker_id):
            self._start(node, model_ref)

    @work(thread=True, group="actions")
    def start_worker(self, node: str, model_ref: str) -> None:
        self._start(node, model_ref)

    @work(thread=True, group="actions")
    def add_node(self, body: dict[str, Any]) -> None:
        assert self.actions is not None
        try:
            answer = self.actions.add_node(body)
        except Exception as exc:
            self.report(f"add node failed: {one_line(exc)}", error=True)
            return
        node = answer.get("node") or {}
        checks = ", ".join(
            f"{c.get('name')} {'ok' if c.get('ok') else 'FAILED'} ({c.get('detail')})"
            for c in answer.get("preflight") or []
        )
        self.report(
            f"added node {body['node_name']} ({node.get('status', 'unknown')})"
            + (f"; preflight: {checks}" if checks else "")
        )

    @work(thread=True, group="logs")
    def load_log(self, screen: WorkerScreen, node: str) -> None:
        assert self.actions is not None
        try:
            lines = self.actions.log_tail(node, screen.worker_id)
        except Exception as exc:
            lines = [f"(log unavailable: {exc})"]
        screen.post_message(LogTail(lines))  # thread-safe


def one_line(exc: BaseException) -> str:
    """An error as one line: the queen's code and message, and its suggestion if any."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, RbeeError):
        text = f"{exc.code}: {exc.message}"
        if suggestion := exc.details.get("suggestion"):
            text += f" ({suggestion})"
    return " ".join(text.split())


def create_app(
    source_factory: Callable[[], EventSource],
    actions: FleetActions | None = None,
    *,
    queen_url: str = "",
    read_only: bool = False,
) -> DashboardApp:
    return DashboardApp(source_factory, actions, queen_url=queen_url, read_only=read_only)
