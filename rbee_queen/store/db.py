"""The SQLite database: one file under RBEE_HOME, opened in WAL mode.

peewee is synchronous; every query here touches a small local file and takes
well under a millisecond, so the API calls it directly from async handlers.
A write that waits longer than the busy timeout for another writer's lock
fails (and the API answers STORE_UNAVAILABLE) rather than hold the request.
"""

from __future__ import annotations

from pathlib import Path

from peewee import SqliteDatabase

from rbee_queen.store.migrations import apply_migrations
from rbee_queen.store.recovery import Recovery, recover_if_damaged
from rbee_queen.store.tables import ALL_TABLES


def open_database(path: Path, busy_timeout_ms: int = 5000) -> SqliteDatabase:
    """Open (creating) the database; a write waits `busy_timeout_ms` for a lock
    (database.busy_timeout_ms) before it fails as STORE_UNAVAILABLE."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = SqliteDatabase(
        str(path),
        pragmas={
            "journal_mode": "wal",
            "synchronous": "normal",
            "busy_timeout": busy_timeout_ms,
            "foreign_keys": 1,
        },
        check_same_thread=False,
    )
    db.bind(ALL_TABLES)  # the tables use this database from now on
    db.connect(reuse_if_open=True)
    apply_migrations(db)
    return db


def open_store(path: Path, busy_timeout_ms: int = 5000) -> tuple[SqliteDatabase, Recovery | None]:
    """Open the database, first setting a damaged one aside for its newest good backup."""
    recovery = recover_if_damaged(path)
    return open_database(path, busy_timeout_ms), recovery


__all__ = ["open_database", "open_store", "ALL_TABLES"]
