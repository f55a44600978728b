"""What the dashboard's Pilot tests share: an event source that replays events,
actions that record their calls, and waits for what the screen shows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from rbee_keeper.tui.app import DashboardApp, create_app
from rbee_keeper.tui.widgets import WorkersTable


class Replay:
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
    return create_app(lambda: Replay(events), kwargs.pop("actions", None), **kwargs)


async def settle(pilot: Any, app: DashboardApp, until: Any, timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not until():
        assert loop.time() < deadline, f"never showed what was expected ({app.fleet.last_error})"
        await pilot.pause(0.05)


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


async def fleet_ready(pilot: Any, app: DashboardApp, workers: int = 1) -> WorkersTable:
    """Wait for the workers table to list `workers` rows, and focus it."""
    table = app.screen.query_one(WorkersTable)
    await settle(pilot, app, lambda: table.row_count == workers)
    table.focus()
    return table


def keys(text: str) -> list[str]:
    """The key names that type `text` (Pilot names punctuation by name)."""
    names = {"-": "minus", " ": "space", ":": "colon", "/": "slash", ".": "full_stop"}
    return [names.get(char, char) for char in text]
