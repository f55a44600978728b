"""Backups of the queen's database and recovery from a damaged one, with real
queen processes over real SQLite files."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from rbee_queen.store.backup import backup_dir, is_sound, list_backups, write_backup
from rbee_queen.store.db import open_database
from tests.plugins.queen import QueenProcess, start_queen, stop_queen


def seed_node(db_path: Path, name: str) -> None:
    """A node row as the queen writes one (no SSH: these tests are about the file)."""
    db = open_database(db_path)
    db.execute_sql(
        "INSERT INTO nodes (name, ssh_host, ssh_port, ssh_user, ssh_key_path, install_path,"
        " model_source, worker_access, status, backends, devices, created_at)"
        " VALUES (?, 'h', 22, 'u', '/k', '/i', 'queen', 'ssh', 'unknown', '[]', '{}', '2026')",
        (name,),
    )
    db.close()


def node_names(queen: QueenProcess) -> list[str]:
    with queen.client() as c:
        nodes = c.get("/v2/registry/beehives/list").json()["nodes"]
    return sorted(n["node_name"] for n in nodes)


def wait_for(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_backup_keeps_the_newest_n_and_each_is_sound(rbee_home: Path) -> None:
    db_path = rbee_home / "queen.db"
    seed_node(db_path, "one")
    made = [write_backup(db_path, keep=2) for _ in range(3)]
    kept = list_backups(backup_dir(db_path))
    assert kept == made[1:]
    assert all(is_sound(p) for p in kept)
    rows = sqlite3.connect(kept[-1]).execute("SELECT name FROM nodes").fetchall()
    assert rows == [("one",)]


def test_a_catalog_change_is_backed_up_once_and_shutdown_backs_up(
    rbee_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RBEE_DB_BACKUP_INTERVAL", "0.2")
    seed_node(rbee_home / "queen.db", "gpu1")
    queen = start_queen(rbee_home)
    try:
        with queen.client() as c:
            for name in ("a", "b", "c"):
                body = {"name": name, "model_ref": "hf:Org/Tiny", "nodes": ["gpu1"]}
                assert c.post("/v2/registry/models/add", json=body).status_code == 201
        directory = backup_dir(rbee_home / "queen.db")
        wait_for(lambda: len(list_backups(directory)) >= 1)
        time.sleep(0.6)  # three checks more: nothing changed, no more copies
        assert len(list_backups(directory)) == 1
        names = sqlite3.connect(list_backups(directory)[0]).execute("SELECT name FROM models")
        assert sorted(r[0] for r in names) == ["a", "b", "c"]
    finally:
        stop_queen(queen)
    assert len(list_backups(directory)) == 2  # the shutdown backup


def damage(db_path: Path) -> None:
    with open(db_path, "r+b") as f:  # the header and the first page overwritten
        f.write(b"\x00garbage" * 512)


def test_a_damaged_database_is_set_aside_and_the_newest_backup_restored(
    rbee_home: Path,
) -> None:
    db_path = rbee_home / "queen.db"
    seed_node(db_path, "kept")
    write_backup(db_path, keep=5)
    damage(db_path)
    queen = start_queen(rbee_home)
    try:
        assert node_names(queen) == ["kept"]
        with queen.client() as c:
            notices = c.get("/v2/nodes/status").json()["notices"]
        assert [n["kind"] for n in notices] == ["database_recovered"]
        assert "restored" in notices[0]["message"]
    finally:
        stop_queen(queen)
    aside = [p for p in rbee_home.iterdir() if p.name.startswith("queen.db.corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"\x00garbage")
    assert "failed its integrity check" in queen.log
    audit = "".join(p.read_text() for p in sorted((rbee_home / "audit").iterdir()))
    entries = [json.loads(line) for line in audit.splitlines()]
    assert any(e["event"] == "store.recovered" for e in entries)


def test_with_no_good_backup_the_queen_starts_empty_and_says_what_to_do(
    rbee_home: Path,
) -> None:
    db_path = rbee_home / "queen.db"
    seed_node(db_path, "lost")
    backups = backup_dir(db_path)
    backups.mkdir()
    (backups / "queen-20260101T000000.000000Z.db").write_bytes(b"not sqlite")
    damage(db_path)
    queen = start_queen(rbee_home)
    try:
        assert node_names(queen) == []
        with queen.client() as c:
            notice = c.get("/v2/nodes/status").json()["notices"][0]
        assert "setup import" in notice["message"]
    finally:
        stop_queen(queen)
    assert any(p.name.startswith("queen.db.corrupt-") for p in rbee_home.iterdir())
