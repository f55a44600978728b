"""The SQLite database: one file under RBEE_HOME, opened in WAL mode.

peewee is synchronous; every query here touches a small local file and takes
well under a millisecond, so the API calls it directly from async handlers.
"""

from __future__ import annotations

from pathlib import Path

from peewee import SqliteDatabase

from rbee_queen.store.migrations import apply_migrations
from rbee_queen.store.tables import ALL_TABLES


def open_database(path: Path) -> SqliteDatabase:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = SqliteDatabase(
        str(path),
        pragmas={
            "journal_mode": "wal",
            "synchronous": "normal",
            "busy_timeout": 5000,
            "foreign_keys": 1,
        },
        check_same_thread=False,
    )
    db.bind(ALL_TABLES)  # the tables use this database from now on
    db.connect(reuse_if_open=True)
    apply_migrations(db)
    return db


__all__ = ["open_database", "ALL_TABLES"]
