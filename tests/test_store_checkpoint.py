"""The WAL checkpoint the queen runs on its backup timer: a real SQLite file in
WAL mode, written through a connection that stays open (as the queen's does)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from rbee_queen.store.checkpoint import truncate_wal


def _open_with_rows(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("CREATE TABLE t (x TEXT)")
    for _ in range(200):
        conn.execute("INSERT INTO t VALUES (?)", ("x" * 2000,))
    return conn


def test_the_wal_is_copied_into_the_database_and_cut_to_nothing(tmp_path: Path) -> None:
    db = tmp_path / "queen.db"
    writer = _open_with_rows(db)
    wal = tmp_path / "queen.db-wal"
    assert wal.stat().st_size > 400_000
    assert truncate_wal(db) is True
    assert wal.stat().st_size == 0
    check = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    assert check.execute("SELECT count(*) FROM t").fetchone() == (200,)
    check.close()
    writer.execute("INSERT INTO t VALUES ('after')")  # the writer goes on as before
    assert writer.execute("SELECT count(*) FROM t").fetchone() == (201,)
    writer.close()


def test_a_reader_in_the_way_makes_it_give_up_at_once(tmp_path: Path) -> None:
    db = tmp_path / "queen.db"
    writer = _open_with_rows(db)
    reader = sqlite3.connect(str(db), isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchone()  # holds a snapshot in the WAL
    writer.execute("INSERT INTO t VALUES ('later')")
    started = time.monotonic()
    assert truncate_wal(db) is False
    assert time.monotonic() - started < 1.0  # no busy wait
    reader.execute("COMMIT")
    assert truncate_wal(db) is True
    assert (tmp_path / "queen.db-wal").stat().st_size == 0
    reader.close()
    writer.close()
