"""Two real queens on one SQLite file, the loopback sshd as their node: the
answer for the other queen's node and the takeover log line match their rows
in docs/troubleshooting.md, and the figures an operator reads beside them
(`rbee_node_leases_held`, `rbee_node_takeovers_total`, NODE_HELD_ELSEWHERE
in `rbee_errors_total`) say the same on each queen."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rbee_queen.nodes.lease import default_queen_id
from tests.lifecycle_support import add_node, wait_for
from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.plugins.sshd import SshServer
from tests.test_lease_metrics import HELD, TAKEN, figure
from tests.test_newcomer_hints import assert_row

# Leases short enough for a test: a released node is taken within half a second.
FAST_LEASES = {"RBEE_LEASE_TTL": "2", "RBEE_LEASE_RENEW": "0.5", "RBEE_HEALTH_INTERVAL": "0"}


def scrape(queen: QueenProcess) -> str:
    with queen.client() as c:
        return c.get("/metrics").text


def refused_at(queen: QueenProcess, model: Path, holder: str) -> str:
    """One request in each shape for the node the other queen holds; the
    native answer's line, as the keeper prints it after `error: `."""
    with queen.client() as c:
        task = c.post("/v2/tasks", json={"node": "n1", "model": f"file:{model}", "prompt": "hi"})
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
        chat = c.post("/v1/chat/completions", json=body)
    assert task.status_code == 503, task.text
    assert chat.status_code == 503, chat.text
    assert chat.json()["error"]["code"] == "node_held_elsewhere"
    error = task.json()["error"]
    assert error["details"]["holder"] == holder
    assert 1 <= int(task.headers["Retry-After"]) <= 3
    return f"[{error['code']}] {error['message']}"


def takeover_line(queen: QueenProcess) -> str:
    """The queen's log line for the node it took, from the message on."""
    (line,) = [line for line in queen.log.splitlines() if "takes over node(s)" in line]
    return line[line.index(f"queen {default_queen_id(queen.home)} ") :]


def test_two_queens_answers_and_takeovers_match_their_rows_and_figures(
    rbee_home: Path,
    sshd: SshServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RBEE_DATABASE", str(tmp_path / "shared.db"))
    for name, value in FAST_LEASES.items():
        monkeypatch.setenv(name, value)
    home_b, model = tmp_path / "home-b", tmp_path / "model"  # nothing loads it: refused first
    home_b.mkdir()
    model.mkdir()
    a = start_queen(rbee_home)
    try:
        add_node(a, sshd, tmp_path)  # A takes n1's lease there and then
        shutil.copy(rbee_home / "known_hosts", home_b / "known_hosts")
        b = start_queen(home_b)
        try:
            with a.client() as c:
                entry = {"name": "tiny", "model_ref": f"file:{model}", "nodes": ["n1"]}
                assert c.post("/v2/registry/models/add", json=entry).status_code == 201
            assert_row("[NODE_HELD_ELSEWHERE]", refused_at(b, model, default_queen_id(a.home)))
            held_a, held_b = scrape(a), scrape(b)
            assert (figure(held_a, HELD), figure(held_a, TAKEN)) == (1, 1)
            assert (figure(held_b, HELD), figure(held_b, TAKEN)) == (0, 0)
            errors = figure(held_b, "rbee_errors_total", code="NODE_HELD_ELSEWHERE", source="api")
            assert errors == 2  # the native answer and the OpenAI-shaped one
            assert figure(held_a, "rbee_errors_total", code="NODE_HELD_ELSEWHERE") is None
            stop_queen(a)  # a clean stop gives the lease up: B takes it at its next round
            wait_for(lambda: figure(scrape(b), TAKEN) == 1, timeout=10)
            assert figure(scrape(b), HELD) == 1
            assert_row("queen … takes over", takeover_line(b))
        finally:
            stop_queen(b)
    finally:
        stop_queen(a)
