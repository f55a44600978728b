"""The modal screens: a yes/no confirmation, the two forms (start a worker, add a
node) and help. Each answers through `dismiss`, so they know nothing of the app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.validation import Integer, Regex, Validator
from textual.widgets import Button, Checkbox, Input, Label, Static

from rbee_queen.validation import HOSTNAME, IDENTIFIER, MODEL_REF, SSH_USER


class ConfirmDialog(ModalScreen[bool]):
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


# Lines of at most 76 characters: the help box fits a 100-column terminal
# without wrapping, so the columns stay aligned.
HELP = """\
rbee dashboard: keys

Fleet      arrows, tab   move between nodes and workers
           enter         open the selected node or worker
           s             stop the selected worker (it drains; asks first)
           r             restart the selected worker (asks first)
           a             add a node (a form; the queen runs the preflight)
Node       enter         open the selected worker
           w             start a worker for a model on this node
Worker     s, r, l       stop it (drains), restart it, reload its log
Anywhere   escape        back
           ?             this help
           ctrl+p        command palette
           q             quit

The queen's stop drains: the worker takes no new requests, gets SIGTERM
and is killed only if it outlives the grace period. Every action asks
first; with --read-only the actions are hidden. When the queen goes away
the top line says so and the dashboard reconnects by itself.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "app.pop_screen", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="help"):
            yield Static(HELP)
