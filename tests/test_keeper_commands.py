"""rbee-keeper's setup and workers commands, its global options and its usage
errors, against a stand-in for the queen's HTTP surface (tests/keeper_support.py;
`infer` is in test_keeper_infer.py). The end-to-end tests with the real queen
live elsewhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rbee_keeper.cli import main
from rbee_keeper.output import ago
from tests.keeper_support import NODE_GPU1, WORKER_1, StandinQueen, one_error_line, running_standin


@pytest.fixture
def queen() -> Iterator[StandinQueen]:
    with running_standin() as state:
        yield state


@pytest.fixture
def ssh_key(tmp_path: Path) -> Path:
    key = tmp_path / "id_ed25519"
    key.write_text("not a real key; the keeper only checks that the file exists\n")
    return key


# --- setup ------------------------------------------------------------------


def test_add_node_sends_expanded_absolute_key_path(
    queen: StandinQueen,
    ssh_key: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HOME", str(ssh_key.parent))
    argv = ["setup", "add-node", "--name", "gpu2", "--ssh-host", "10.0.0.6"]
    argv += ["--ssh-user", "bob", "--ssh-key", "~/id_ed25519", "--install-path", "~/.rbee"]
    argv += ["--ssh-port", "2222", "--accept-new-host-key", "--queen-url", queen.url]
    assert main(argv) == 0

    sent = queen.requests[-1]
    assert sent[:2] == ("POST", "/v2/registry/beehives/add")
    assert sent[2] == {
        "node_name": "gpu2",
        "ssh_host": "10.0.0.6",
        "ssh_port": 2222,
        "ssh_user": "bob",
        "ssh_key_path": str(ssh_key),
        "install_path": "~/.rbee",
        "worker_python": None,
        "accept_new_host_key": True,
    }
    assert capsys.readouterr().out == "added node gpu2 (bob@10.0.0.6:2222, reachable)\n"


def test_add_node_with_missing_key_fails_before_any_request(queen: StandinQueen) -> None:
    missing = "~/no-such-dir/id_ed25519"
    argv = ["setup", "add-node", "--name", "gpu2", "--ssh-host", "h", "--ssh-user", "u"]
    argv += ["--ssh-key", missing, "--install-path", "~/.rbee", "--queen-url", queen.url]
    run = subprocess.run(
        [sys.executable, "-m", "rbee_keeper", *argv], capture_output=True, text=True, timeout=30
    )

    assert run.returncode == 1
    expected = f"SSH key not found: {str(Path(missing).expanduser())!r}"
    assert one_error_line(run.stderr) == f"error: [SSH_KEY_NOT_FOUND] {expected}"
    assert "Traceback" not in run.stderr
    assert queen.requests == []


def test_add_node_duplicate_shows_queen_error(
    queen: StandinQueen, ssh_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["setup", "add-node", "--name", "gpu1", "--ssh-host", "h", "--ssh-user", "u"]
    argv += ["--ssh-key", str(ssh_key), "--install-path", "/opt/rbee", "--queen-url", queen.url]
    assert main(argv) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line == "error: [NODE_ALREADY_EXISTS] node gpu1 already exists"


def test_list_nodes_prints_a_table(queen: StandinQueen, capsys: pytest.CaptureFixture[str]) -> None:
    queen.nodes["cpu9"] = {**NODE_GPU1, "node_name": "cpu9", "ssh_host": "10.0.0.9"}
    queen.nodes["cpu9"] |= {"status": "unknown", "last_connected": None, "backends": ["cpu"]}

    assert main(["setup", "list-nodes", "--queen-url", queen.url]) == 0

    lines = capsys.readouterr().out.splitlines()
    header = ["NAME", "SSH", "TARGET", "STATUS", "LAST", "CONNECTED", "BACKENDS", "MEMORY"]
    assert lines[0].split() == header  # MEMORY: the node's worker bound (-: the queen's)
    # A person reads the age (`N days ago`); --json keeps the ISO time.
    gpu1 = ["gpu1", "alice@10.0.0.5:22", "reachable", *ago(NODE_GPU1["last_connected"]).split()]
    assert lines[1].split() == [*gpu1, "cuda=2", "cpu=1", "-"]
    assert lines[2].split() == ["cpu9", "alice@10.0.0.9:22", "unknown", "never", "cpu=1", "-"]
    assert lines[1].index("alice@") == lines[2].index("alice@") == lines[0].index("SSH TARGET")


def test_list_nodes_json_is_the_queens_answer(
    queen: StandinQueen, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["setup", "list-nodes", "--json", "--queen-url", queen.url]) == 0
    assert json.loads(capsys.readouterr().out) == {"nodes": [NODE_GPU1]}


def test_global_options_also_work_before_the_command(
    queen: StandinQueen, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--json", "--queen-url", queen.url, "setup", "list-nodes"]) == 0
    assert json.loads(capsys.readouterr().out) == {"nodes": [NODE_GPU1]}


def test_remove_node(queen: StandinQueen, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["setup", "remove-node", "--name", "gpu1", "--queen-url", queen.url]) == 0
    assert capsys.readouterr().out == "removed node gpu1\n"
    assert queen.nodes == {}


def test_remove_unknown_node_fails_with_node_not_found(queen: StandinQueen) -> None:
    argv = ["setup", "remove-node", "--name", "nope", "--queen-url", queen.url]
    run = subprocess.run(
        [sys.executable, "-m", "rbee_keeper", *argv], capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 1
    assert one_error_line(run.stderr) == "error: [NODE_NOT_FOUND] no node named nope"
    assert run.stdout == ""


# --- workers ----------------------------------------------------------------


def test_workers_list_table_and_json(
    queen: StandinQueen, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["workers", "list", "--queen-url", queen.url]) == 0
    header, row = capsys.readouterr().out.splitlines()
    columns = ["ID", "NODE", "STATE", "MODEL", "DEVICE", "PID", "PORT", "MEMORY", "STARTED"]
    assert header.split() == columns
    # MEMORY: the worker's RAM bound and what set it; `-` where the queen does not say
    expected = ["w-1", "gpu1", "idle", "file:/models/tiny", "cuda:0", "4242", "8081", "-"]
    assert row.split() == [*expected, *ago(WORKER_1["started_at"]).split()]
    assert row.endswith(" days ago")

    assert main(["workers", "list", "--json", "--queen-url", queen.url]) == 0
    assert json.loads(capsys.readouterr().out) == {"workers": [WORKER_1]}


def test_workers_shutdown(queen: StandinQueen, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["workers", "shutdown", "--id", "w-1", "--queen-url", queen.url]) == 0
    assert capsys.readouterr().out == "stopped worker w-1 (gracefully)\n"
    assert queen.requests[-1] == ("POST", "/v2/workers/shutdown", {"worker_id": "w-1"})

    assert main(["workers", "shutdown", "--id", "w-1", "--queen-url", queen.url]) == 1
    assert one_error_line(capsys.readouterr().err) == "error: [WORKER_NOT_FOUND] no worker w-1"


# --- global options and usage -----------------------------------------------


def test_queen_url_from_environment(
    queen: StandinQueen, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RBEE_QUEEN_URL", queen.url)
    assert main(["workers", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"workers": [WORKER_1]}
    assert queen.paths() == ["/health", "/v2/workers/list"]


def test_queen_url_flag_wins_over_environment(
    queen: StandinQueen, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RBEE_QUEEN_URL", "http://192.0.2.1:9")  # would time out, not refuse
    assert main(["setup", "list-nodes", "--queen-url", queen.url]) == 0
    assert queen.paths() == ["/health", "/v2/registry/beehives/list"]


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["setup"],
        ["setup", "remove-node"],
        ["infer", "--node", "gpu1", "--model", "m:x", "--prompt", "p", "--max-tokens", "many"],
        ["workers", "list", "--queen-url", "localhost:8080"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "usage: rbee-keeper" in capsys.readouterr().err


def test_usage_error_exits_2_as_a_process() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "rbee_keeper", "setup", "add-node", "--name", "x"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2
    assert "the following arguments are required: --ssh-host" in run.stderr
