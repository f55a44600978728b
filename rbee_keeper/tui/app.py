"""The dashboard app. `create_app()` is the factory the CLI and the tests call.

Events arrive on an async worker and are applied to the `Fleet` picture; the
screen redraws at most a few times a second however many events arrive, which
keeps a fleet of hundreds of workers smooth.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any

from textual import work
from textual.app import App
from textual.command import Hit, Hits, Provider

from rbee_keeper.tui.fleet import Fleet
from rbee_keeper.tui.screens import Confirm, FleetView, Help, NodeView, WorkerView
from rbee_keeper.tui.source import EventSource, FleetActions

REDRAW_INTERVAL_S = 0.25
RECONNECT_BACKOFF_S = (0.5, 1.0, 2.0, 4.0)


class FleetCommands(Provider):
    """Command palette: open any node or worker, stop a worker."""

    async def search(self, query: str) -> Hits:
        app = self.app
        assert isinstance(app, DashboardApp)
        matcher = self.matcher(query)
        for name in sorted(app.fleet.nodes):
            text = f"Open node {name}"
            if (score := matcher.match(text)) > 0:
                yield Hit(score, matcher.highlight(text), partial(app.push_screen, NodeView(name)))
        for worker_id in sorted(app.fleet.workers):
            text = f"Open worker {worker_id}"
            if (score := matcher.match(text)) > 0:
                yield Hit(
                    score, matcher.highlight(text), partial(app.push_screen, WorkerView(worker_id))
                )
            if not app.read_only:
                text = f"Stop worker {worker_id}"
                if (score := matcher.match(text)) > 0:
                    yield Hit(score, matcher.highlight(text), partial(app.confirm_stop, worker_id))


class DashboardApp(App[None]):
    TITLE = "rbee"
    SUB_TITLE = "fleet dashboard"
    CSS_PATH = "styles.tcss"
    COMMANDS = App.COMMANDS | {FleetCommands}
    SCREENS = {"help": Help}

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
        self.fleet = Fleet()
        self.events_seen = 0
        self._dirty = True

    def on_mount(self) -> None:
        self.push_screen(FleetView())
        self.set_interval(REDRAW_INTERVAL_S, self._redraw)
        self.follow_events()

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
        if not self._dirty:
            return
        self._dirty = False
        refresh = getattr(self.screen, "refresh_view", None)
        if refresh is not None:
            refresh()

    # --- actions -----------------------------------------------------------------

    def confirm_stop(self, worker_id: str) -> None:
        if self.read_only or self.actions is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.stop_worker(worker_id)

        self.push_screen(Confirm(f"Stop worker {worker_id}?"), answered)

    @work(thread=True, group="actions")
    def stop_worker(self, worker_id: str) -> None:
        assert self.actions is not None
        try:
            answer = self.actions.stop_worker(worker_id)
        except Exception as exc:
            self.call_from_thread(self.notify, f"stop failed: {exc}", severity="error")
            return
        how = "forced" if answer.get("forced") else "gracefully"
        self.call_from_thread(self.notify, f"worker {worker_id} stopped {how}")

    @work(thread=True, group="logs")
    def load_log(self, screen: WorkerView, node: str) -> None:
        if self.actions is None or not node:
            return
        try:
            lines = self.actions.log_tail(node, screen.worker_id)
        except Exception as exc:
            lines = [f"(log unavailable: {exc})"]
        self.call_from_thread(screen.show_log, lines)


def create_app(
    source_factory: Callable[[], EventSource],
    actions: FleetActions | None = None,
    *,
    queen_url: str = "",
    read_only: bool = False,
) -> DashboardApp:
    return DashboardApp(source_factory, actions, queen_url=queen_url, read_only=read_only)
