"""What the screens ask of the app. Screens post these and the app, which holds
the actions and the read-only switch, handles them with `@on`; no screen calls
into the app."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.message import Message

if TYPE_CHECKING:
    from rbee_keeper.tui.screens import WorkerScreen


class OpenNode(Message):
    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node


class OpenWorker(Message):
    def __init__(self, worker_id: str) -> None:
        super().__init__()
        self.worker_id = worker_id


class StopWorker(Message):
    """Stop (drain) a worker, once the user confirms."""

    def __init__(self, worker_id: str) -> None:
        super().__init__()
        self.worker_id = worker_id


class RestartWorker(Message):
    """Stop a worker, then start one for its model on its node, once confirmed."""

    def __init__(self, worker_id: str) -> None:
        super().__init__()
        self.worker_id = worker_id


class StartWorkerOn(Message):
    """Open the form that starts a worker on a node."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node


class AddNode(Message):
    """Open the add-node form."""


class LoadLog(Message):
    """Fetch a worker's log tail; the app answers the screen with `LogTail`."""

    def __init__(self, screen: WorkerScreen) -> None:
        super().__init__()
        self.screen = screen

    @property
    def control(self) -> WorkerScreen:
        return self.screen


class LogTail(Message):
    def __init__(self, lines: list[str]) -> None:
        super().__init__()
        self.lines = tuple(lines)
