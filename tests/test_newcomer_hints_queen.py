"""docs/troubleshooting.md's rows about keys, the queen and its store, produced for real.

Each case brings about its row's situation (a real queen, a real sshd, real
SQLite files, a real size-limited tmpfs) and checks the line the user sees
against the row's text, as tests/test_newcomer_hints.py does for the SSH rows.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from rbee_keeper.cli import main as keeper
from rbee_queen.store.backup import write_backup
from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.plugins.sshd import SshServer
from tests.test_audit import tamper_edit, write_entries
from tests.test_newcomer_hints import add_node, assert_row, row_patterns
from tests.test_store_recovery import damage, seed_node

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def error_line(answer_json: dict[str, dict[str, str]]) -> str:
    error = answer_json["error"]
    return f"[{error['code']}] {error['message']}"


def keeper_lines(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[list[str], list[str]]:
    keeper(list(argv))
    printed = capsys.readouterr()
    return printed.out.splitlines(), printed.err.splitlines()


def test_a_key_that_is_not_admin_or_lacks_the_model_matches_its_row(
    queen: QueenProcess,
) -> None:
    with queen.client() as client:
        made = client.post("/v2/keys/add", json={"name": "ci", "models": ["file:/m/a"]})
    with queen.client(token=made.json()["token"]) as client:
        forbidden = client.post("/v2/workers/shutdown", json={"worker_id": "w-1"})
        task = {"node": "n1", "model": "file:/m/b", "prompt": "hi"}
        not_allowed = client.post("/v2/tasks", json=task)
    assert (forbidden.status_code, not_allowed.status_code) == (403, 403)
    assert_row("[FORBIDDEN]", error_line(forbidden.json()))
    assert error_line(not_allowed.json()).startswith("[MODEL_NOT_ALLOWED] ")
    assert_row("[FORBIDDEN]", error_line(not_allowed.json()))


def test_a_host_that_never_answers_matches_its_row(
    rbee_home: Path, sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    silent = socket.socket()  # accepts and never speaks SSH: a hung host
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(silent.accept()[0]), daemon=True).start()
    monkeypatch.setenv("RBEE_SSH_CONNECT_TIMEOUT", "1")
    queen = start_queen(rbee_home)
    try:
        body = sshd.node_body("n1", tmp_path / "inst", accept_new_host_key=True)
        body["ssh_port"] = silent.getsockname()[1]
        assert_row("[CONNECTION_TIMEOUT]", add_node(queen, body))
    finally:
        stop_queen(queen)
        for sock in [*held, silent]:
            sock.close()


def test_a_missing_model_folder_matches_its_row(
    queen: QueenProcess, sshd: SshServer, tmp_path: Path
) -> None:
    queen.add_node(sshd.node_body("n1", tmp_path / "inst", accept_new_host_key=True))
    task = {"node": "n1", "model": f"file:{tmp_path}/no-such-model", "prompt": "hi"}
    with queen.client() as client:
        answer = client.post("/v2/tasks", json=task)
    assert answer.status_code == 404
    assert_row("[MODEL_NOT_FOUND]", error_line(answer.json()))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB filesystem: under the preflight's 2 GiB."""
    mount = tmp_path / "smallfs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@needs_root
def test_a_node_short_of_disk_matches_the_preflight_rows(
    queen: QueenProcess, sshd: SshServer, small_disk: Path
) -> None:
    # A python older than 3.10 is not on this machine; the disk check is the
    # same row's third cause, and an install path on a small disk produces it.
    line = add_node(queen, sshd.node_body("n1", small_disk / "inst", accept_new_host_key=True))
    assert line.startswith("[PREFLIGHT_FAILED] preflight disk: n1: 0.0 GiB free"), line
    assert any(p.match(line) for p in row_patterns("[PREFLIGHT_FAILED]")), line
    assert any(p.match(line) for p in row_patterns("[…] preflight CHECK")), line


def test_no_queen_at_a_remote_url_matches_its_row(capsys: pytest.CaptureFixture[str]) -> None:
    url = "http://nonexistent.invalid:8080"
    _, err = keeper_lines(capsys, "workers", "list", "--queen-url", url)
    (line,) = err
    assert_row("[QUEEN_UNAVAILABLE]", line.removeprefix("error: "))


def test_an_edited_audit_entry_matches_its_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "audit"
    write_entries(directory, 6)
    tamper_edit(sorted(directory.glob("audit-*.jsonl"))[0])
    _, err = keeper_lines(capsys, "audit", "verify", "--dir", str(directory))
    (line,) = err
    assert_row("[AUDIT_CHAIN_BROKEN]", line.removeprefix("error: "))


def test_a_held_database_lock_matches_its_row(
    rbee_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RBEE_DB_BUSY_TIMEOUT_MS", "300")
    seed_node(rbee_home / "queen.db", "gpu1")
    queen = start_queen(rbee_home)
    other = sqlite3.connect(queen.home / "queen.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        body = {"name": "tiny", "model_ref": "hf:Org/Tiny", "nodes": ["gpu1"]}
        with queen.client() as client:
            answer = client.post("/v2/registry/models/add", json=body)
        assert answer.status_code == 503
        assert_row("[STORE_UNAVAILABLE]", error_line(answer.json()))
    finally:
        other.close()
        stop_queen(queen)


def banner(capsys: pytest.CaptureFixture[str], queen: QueenProcess) -> list[str]:
    """The `!!` lines `nodes status` prints above its table (on stderr)."""
    _, err = keeper_lines(capsys, "nodes", "status", "--queen-url", queen.url)
    return [line for line in err if line.startswith("!! ")]


@pytest.mark.parametrize("backup", [True, False], ids=["restored", "no-good-backup"])
def test_a_damaged_database_matches_its_rows(
    rbee_home: Path, capsys: pytest.CaptureFixture[str], backup: bool
) -> None:
    db_path = rbee_home / "queen.db"
    seed_node(db_path, "kept")
    if backup:
        write_backup(db_path, keep=5)
    damage(db_path)
    queen = start_queen(rbee_home)
    try:
        (line,) = banner(capsys, queen)
    finally:
        stop_queen(queen)
    start = "!! the database failed" if backup else "!! … no good backup"
    assert any(p.match(line) for p in row_patterns(start)), line


@needs_root
def test_a_low_audit_disk_matches_its_row(
    rbee_home: Path,
    small_disk: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (rbee_home / "audit").symlink_to(small_disk)
    (small_disk / "filler").write_bytes(b"\0" * 6 * 2**20)  # 2 MiB left, under 4
    monkeypatch.setenv("RBEE_AUDIT_MIN_FREE_MB", "4")
    monkeypatch.setenv("RBEE_AUDIT_DISK_CHECK_S", "0.2")
    queen = start_queen(rbee_home)
    try:
        (line,) = banner(capsys, queen)
    finally:
        stop_queen(queen)
    assert any(p.match(line) for p in row_patterns("!! the audit log's disk")), line
