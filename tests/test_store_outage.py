"""A database that refuses writes (a held lock, a full disk):
writes answer 503 STORE_UNAVAILABLE with Retry-After, reads go on, and the
queen takes writes again by itself once the cause is gone. Real SQLite files
on a real size-limited tmpfs (the tests run as root, as CI does)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.test_store_recovery import seed_node

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def add_model(queen: QueenProcess, name: str) -> httpx.Response:
    body = {"name": name, "model_ref": "hf:Org/Tiny", "nodes": ["gpu1"]}
    with queen.client() as c:
        return c.post("/v2/registry/models/add", json=body)


def assert_unavailable(answer: httpx.Response) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "STORE_UNAVAILABLE"
    assert int(answer.headers["retry-after"]) > 0


def model_names(queen: QueenProcess) -> list[str]:
    with queen.client() as c:
        answer = c.get("/v2/registry/models/list")
    assert answer.status_code == 200
    return sorted(m["name"] for m in answer.json()["models"])


@pytest.fixture
def store_queen(rbee_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[QueenProcess]:
    monkeypatch.setenv("RBEE_DB_BUSY_TIMEOUT_MS", "300")
    monkeypatch.setenv("RBEE_HEALTH_INTERVAL", "0")
    seed_node(rbee_home / "queen.db", "gpu1")
    queen = start_queen(rbee_home)
    try:
        yield queen
    finally:
        stop_queen(queen)


def test_a_lock_held_past_the_busy_timeout_is_503_and_passes(store_queen: QueenProcess) -> None:
    assert add_model(store_queen, "before").status_code == 201
    other = sqlite3.connect(store_queen.home / "queen.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        assert_unavailable(add_model(store_queen, "during"))
        assert model_names(store_queen) == ["before"]  # reads are served
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert add_model(store_queen, "after").status_code == 201
    assert model_names(store_queen) == ["after", "before"]
    with store_queen.client() as c:
        notices = c.get("/v2/nodes/status").json()["notices"]
    assert [n["kind"] for n in notices] == ["store_unavailable"]
    assert "Traceback" not in store_queen.log


@pytest.fixture
def db_on_tmpfs(rbee_home: Path, tmp_path: Path) -> Iterator[Path]:
    """The queen's database file on its own 1 MiB tmpfs (queen.db a link into it)."""
    mount = tmp_path / "dbfs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        (rbee_home / "queen.db").symlink_to(mount / "queen.db")
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@needs_root
def test_a_full_disk_is_503_and_passes_when_space_returns(
    db_on_tmpfs: Path, store_queen: QueenProcess
) -> None:
    assert add_model(store_queen, "before").status_code == 201
    filler = db_on_tmpfs / "filler"
    with open(filler, "wb") as f:  # fill the file system to the last block
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    answers = [add_model(store_queen, f"full{i}") for i in range(40)]
    assert any(a.status_code == 503 for a in answers), [a.status_code for a in answers]
    for answer in answers:
        if answer.status_code != 201:
            assert_unavailable(answer)
    assert "before" in model_names(store_queen)  # reads are served
    filler.unlink()
    assert add_model(store_queen, "roomy").status_code == 201
    # A read-only remount is refused while the queen holds the files open for
    # writing ("mount point is busy"), so the full disk stands for both.
    assert "Traceback" not in store_queen.log


@needs_root
def test_a_low_audit_disk_warns_without_blocking_requests(
    rbee_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mount = tmp_path / "auditfs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    try:
        (rbee_home / "audit").symlink_to(mount)
        (mount / "filler").write_bytes(b"\0" * 6 * 2**20)  # 2 MiB left, under 4
        monkeypatch.setenv("RBEE_AUDIT_MIN_FREE_MB", "4")
        monkeypatch.setenv("RBEE_AUDIT_DISK_CHECK_S", "0.2")
        queen = start_queen(rbee_home)
        try:
            with queen.client() as c:
                assert c.get("/v2/registry/models/list").status_code == 200
                notices = c.get("/v2/nodes/status").json()["notices"]
                metrics = c.get("/metrics").text
        finally:
            stop_queen(queen)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
    assert [n["kind"] for n in notices] == ["audit_disk_low"]
    counted = [line for line in metrics.splitlines() if line.startswith("rbee_audit_disk_low_warn")]
    assert counted and float(counted[0].split()[-1]) >= 1, counted
