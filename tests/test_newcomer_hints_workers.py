"""docs/troubleshooting.md's rows about starting workers and a node gone away, for real.

A real queen and sshd, the tiny model: a worker whose interpreter lacks its
packages, a load slower than the loading timeout, and a node whose sshd stops.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from rbee_keeper.cli import main as keeper
from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.plugins.sshd import SshServer, start_sshd
from tests.test_newcomer_hints import assert_row, row_patterns

SYSTEM_PYTHON = "/usr/bin/python3"  # the system's: the worker's packages are in the venv


def start_task(queen: QueenProcess, model: Path) -> str:
    with queen.client() as client:
        answer = client.post(
            "/v2/tasks", json={"node": "n1", "model": f"file:{model}", "prompt": "hi"}
        )
    assert answer.status_code >= 400, answer.text
    error = answer.json()["error"]
    return f"[{error['code']}] {error['message']}"


def test_a_worker_python_without_its_packages_matches_its_row(
    queen: QueenProcess, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    lacks = subprocess.run([SYSTEM_PYTHON, "-c", "import starlette"], capture_output=True)
    assert lacks.returncode != 0, "the system python has the worker's packages"
    body = sshd.node_body("n1", tmp_path / "inst", accept_new_host_key=True)
    queen.add_node({**body, "worker_python": SYSTEM_PYTHON})
    assert_row("[WORKER_START_FAILED]", start_task(queen, tiny_model_dir))


def test_a_load_past_the_loading_timeout_matches_its_row(
    rbee_home: Path,
    sshd: SshServer,
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RBEE_WORKER_LOADING_TIMEOUT", "1")  # its least; torch alone takes longer
    queen = start_queen(rbee_home)
    try:
        queen.add_node(sshd.node_body("n1", tmp_path / "inst", accept_new_host_key=True))
        assert_row("[LOADING_TIMEOUT]", start_task(queen, tiny_model_dir))
    finally:
        stop_queen(queen)


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_a_node_whose_sshd_stopped_shows_unreachable(
    queen: QueenProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proc, server = start_sshd(tmp_path / "node")
    try:
        queen.add_node(server.node_body("n1", tmp_path / "inst", accept_new_host_key=True))
    finally:
        # The listener and the connection it serves (its child): the node is gone.
        sessions = children_of(proc.pid)
        proc.terminate()
        proc.wait(timeout=10)
        for pid in sessions:
            os.kill(pid, signal.SIGTERM)
    capsys.readouterr()
    assert keeper(["nodes", "status", "--queen-url", queen.url]) == 0
    printed = capsys.readouterr()
    lines = (printed.out + printed.err).splitlines()
    rows = [line for line in lines if line.split()[:1] == ["n1"]]
    assert len(rows) == 1, lines
    row = rows[0]
    # The row shows the command, then the status its table gives the node.
    command, status = row_patterns("nodes status` shows")
    assert command.fullmatch("nodes status") and status.fullmatch(row.split()[1]), row
    # The error is printed under the table.
    assert any("[NODE_UNREACHABLE]" in line or "[CONNECTION" in line for line in lines), lines
