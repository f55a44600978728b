"""Append-only, named migrations recorded in a table; they run on SQLite and PostgreSQL.

Never edit or reorder an applied migration: add `m00N_...` at the end.

Writing a portable migration (both backends run every one of them):
- New tables: `db.create_tables([Table])` from tables.py; peewee writes each
  backend's own DDL. Give a number that may pass 2**31 a BigIntegerField
  (PostgreSQL's INTEGER is 32 bits, SQLite's is 64).
- New columns: `add_column(db, table, name, ddl)` below, with SQL types both
  accept (VARCHAR(n), TEXT, INTEGER, BIGINT, REAL, TIMESTAMP) and a literal
  default; it checks `db.get_columns` first, because m001 on a fresh database
  creates the tables from today's models, which have the column already.
  Give the model's field the same default in SQL (`constraints=[SQL("DEFAULT
  0")]`), so a fresh database and an upgraded one agree on raw INSERTs.
- Values in SQL go through `db.param` placeholders (`?` on SQLite, `%s` on
  PostgreSQL), never `?` written out; no PRAGMA, no SQLite-only ALTER forms
  (RENAME/DROP COLUMN by table rebuild), no AUTOINCREMENT.
- Each migration runs in its own transaction (PostgreSQL's DDL is
  transactional too), and on PostgreSQL under an advisory lock, so two queens
  starting on one database apply it once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from peewee import Database, PostgresqlDatabase

# pg_advisory_lock's key for "migrating the rbee schema" (any constant will do).
MIGRATION_LOCK_KEY = 0x72626565


def add_column(db: Database, table: str, column: str, ddl: str) -> None:
    """ALTER TABLE ... ADD COLUMN, unless the table has the column already."""
    if column not in {c.name for c in db.get_columns(table)}:
        db.execute_sql(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}")


def m001_initial(db: Database) -> None:
    from rbee_queen.store.tables import Node, Worker, WorkerEvent

    db.create_tables([Node, Worker, WorkerEvent])


def m002_models(db: Database) -> None:
    from rbee_queen.store.tables import ModelEntry

    db.create_tables([ModelEntry])


def m003_node_models(db: Database) -> None:
    from rbee_queen.store.tables import NodeModel

    db.create_tables([NodeModel])


def m004_node_model_source(db: Database) -> None:
    # Where a node's hub downloads run: "queen" (fetched there, copied over SFTP)
    # or "hub" (on the node itself). m001 on a fresh database has it already.
    add_column(db, "nodes", "model_source", "VARCHAR(8) NOT NULL DEFAULT 'queen'")


def m005_node_worker_access(db: Database) -> None:
    # How the queen reaches the node's workers: "ssh" (a port forward) or "direct".
    add_column(db, "nodes", "worker_access", "VARCHAR(16) NOT NULL DEFAULT 'ssh'")


def m006_model_device(db: Database) -> None:
    # The device a catalog model's workers run on: cpu, cuda (any GPU) or cuda:N.
    add_column(db, "models", "device", "VARCHAR(16) NOT NULL DEFAULT 'cpu'")


def m007_worker_vram(db: Database) -> None:
    # The VRAM a loaded CUDA worker reported and its GPU's model name. Only an
    # older SQLite file lacks them (64-bit INTEGER there); a PostgreSQL
    # database gets BIGINT from m001.
    add_column(db, "workers", "vram_bytes", "INTEGER")
    add_column(db, "workers", "gpu_name", "VARCHAR(128)")


def m008_node_leases(db: Database) -> None:
    # Which queen drives each node (two queens on one database), and the worker
    # tokens a queen taking a node over needs.
    from rbee_queen.store.tables import NodeLease, WorkerToken

    db.create_tables([NodeLease, WorkerToken])


def m009_memory_bounds(db: Database) -> None:
    # A worker's RAM bound set per node and per model, the bound each worker was
    # given, and the bound an OOM kill raised for a model on a node.
    from rbee_queen.store.tables import RaisedMemoryBound

    add_column(db, "nodes", "worker_memory_limit_mib", "INTEGER NOT NULL DEFAULT 0")
    add_column(db, "models", "memory_limit_mib", "INTEGER NOT NULL DEFAULT 0")
    add_column(db, "workers", "memory_limit_bytes", "BIGINT")
    add_column(db, "workers", "memory_limit_source", "VARCHAR(16)")
    db.create_tables([RaisedMemoryBound])


MIGRATIONS: list[tuple[str, Callable[[Database], None]]] = [
    ("m001_initial", m001_initial),
    ("m002_models", m002_models),
    ("m003_node_models", m003_node_models),
    ("m004_node_model_source", m004_node_model_source),
    ("m005_node_worker_access", m005_node_worker_access),
    ("m006_model_device", m006_model_device),
    ("m007_worker_vram", m007_worker_vram),
    ("m008_node_leases", m008_node_leases),
    ("m009_memory_bounds", m009_memory_bounds),
]


def apply_migrations(db: Database) -> list[str]:
    """Apply the migrations this database has not had; their names, in order."""
    with migration_lock(db):
        db.execute_sql(
            "CREATE TABLE IF NOT EXISTS _migrations"
            " (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        done = {row[0] for row in db.execute_sql("SELECT name FROM _migrations").fetchall()}
        applied = []
        for name, migrate in MIGRATIONS:
            if name in done:
                continue
            with db.atomic():
                migrate(db)
                db.execute_sql(
                    f"INSERT INTO _migrations (name, applied_at) VALUES ({db.param}, {db.param})",
                    (name, datetime.now(UTC).isoformat()),
                )
            applied.append(name)
        return applied


@contextmanager
def migration_lock(db: Database) -> Iterator[None]:
    """On PostgreSQL, one process migrates at a time (another queen waits for
    it, then finds the migrations recorded); SQLite's file has one queen."""
    if not isinstance(db, PostgresqlDatabase):
        yield
        return
    # A start waits for another queen's migrations however long they take,
    # rather than fail at the busy timeout (lock_timeout covers this lock too).
    db.execute_sql("SET lock_timeout = 0")
    db.execute_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})")
    try:
        yield
    finally:
        db.execute_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})")
        db.execute_sql("RESET lock_timeout")  # back to database.busy_timeout_ms
