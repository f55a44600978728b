"""The queen's database: a SQLite file under RBEE_HOME (WAL mode), or a
PostgreSQL server when `paths.database` is a `postgresql://` URL (store/postgres.py).

peewee is synchronous; every query here touches a small local file (or a
nearby server) and takes well under a millisecond, so the API calls it directly
from async handlers. A write that waits longer than the busy timeout for
another writer's lock fails (and the API answers STORE_UNAVAILABLE) rather
than hold the request.
"""

from __future__ import annotations

from pathlib import Path

from peewee import Database, OperationalError, SqliteDatabase

from rbee_queen.database_url import PostgresUrl, is_database_url
from rbee_queen.errors import StoreUnavailable
from rbee_queen.store.migrations import apply_migrations
from rbee_queen.store.postgres import postgres_database
from rbee_queen.store.recovery import Recovery, recover_if_damaged
from rbee_queen.store.tables import ALL_TABLES

# A SQLite file's path, or a PostgreSQL server's URL.
StoreLocation = Path | PostgresUrl


def as_location(value: Path | PostgresUrl | str) -> StoreLocation:
    if isinstance(value, str):
        return PostgresUrl.parse(value) if is_database_url(value) else Path(value)
    return value


def open_database(
    location: Path | PostgresUrl | str,
    busy_timeout_ms: int = 5000,
    password_file: Path | None = None,
) -> Database:
    """Open (creating) the database and bring its schema up to date; a write
    waits `busy_timeout_ms` for a lock (database.busy_timeout_ms) before it
    fails as STORE_UNAVAILABLE."""
    where = as_location(location)
    if isinstance(where, PostgresUrl):
        db: Database = postgres_database(where, busy_timeout_ms, password_file)
    else:
        db = sqlite_database(where, busy_timeout_ms)
    db.bind(ALL_TABLES)  # the tables use this database from now on
    try:
        db.connect(reuse_if_open=True)
    except OperationalError as exc:  # a server down or refusing us: one line, coded
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreUnavailable(f"cannot open the database {where}: {reason}") from None
    apply_migrations(db)
    return db


def sqlite_database(path: Path, busy_timeout_ms: int) -> SqliteDatabase:
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteDatabase(
        str(path),
        pragmas={
            "journal_mode": "wal",
            "synchronous": "normal",
            "busy_timeout": busy_timeout_ms,
            "foreign_keys": 1,
        },
        check_same_thread=False,
    )


def open_store(
    location: Path | PostgresUrl | str,
    busy_timeout_ms: int = 5000,
    password_file: Path | None = None,
) -> tuple[Database, Recovery | None]:
    """Open the database, first setting a damaged SQLite file aside for its
    newest good backup (PostgreSQL keeps its own: pg_dump, PITR)."""
    where = as_location(location)
    recovery = recover_if_damaged(where) if isinstance(where, Path) else None
    return open_database(where, busy_timeout_ms, password_file), recovery


__all__ = ["open_database", "open_store", "ALL_TABLES", "StoreLocation"]
