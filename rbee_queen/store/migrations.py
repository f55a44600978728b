"""Append-only, named migrations recorded in a table.

Never edit or reorder an applied migration: add `m00N_...` at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from peewee import SqliteDatabase


def m001_initial(db: SqliteDatabase) -> None:
    from rbee_queen.store.tables import Node, Worker, WorkerEvent

    db.create_tables([Node, Worker, WorkerEvent])


def m002_models(db: SqliteDatabase) -> None:
    from rbee_queen.store.tables import ModelEntry

    db.create_tables([ModelEntry])


def m003_node_models(db: SqliteDatabase) -> None:
    from rbee_queen.store.tables import NodeModel

    db.create_tables([NodeModel])


def m004_node_model_source(db: SqliteDatabase) -> None:
    # Where a node's hub downloads run: "queen" (fetched there, copied over SFTP)
    # or "hub" (on the node itself). m001 on a fresh database has it already.
    if "model_source" not in {c.name for c in db.get_columns("nodes")}:
        db.execute_sql(
            "ALTER TABLE nodes ADD COLUMN model_source VARCHAR(8) NOT NULL DEFAULT 'queen'"
        )


def m005_node_worker_access(db: SqliteDatabase) -> None:
    # How the queen reaches the node's workers: "ssh" (a port forward) or "direct".
    # A fresh database has it already: m001 creates the table from today's model.
    if "worker_access" not in {c.name for c in db.get_columns("nodes")}:
        db.execute_sql(
            "ALTER TABLE nodes ADD COLUMN worker_access VARCHAR(16) NOT NULL DEFAULT 'ssh'"
        )


def m006_model_device(db: SqliteDatabase) -> None:
    # The device a catalog model's workers run on: cpu, cuda (any GPU) or cuda:N.
    if "device" not in {c.name for c in db.get_columns("models")}:
        db.execute_sql("ALTER TABLE models ADD COLUMN device VARCHAR(16) NOT NULL DEFAULT 'cpu'")


def m007_worker_vram(db: SqliteDatabase) -> None:
    # The VRAM a loaded CUDA worker reported and its GPU's model name.
    columns = {c.name for c in db.get_columns("workers")}
    if "vram_bytes" not in columns:
        db.execute_sql("ALTER TABLE workers ADD COLUMN vram_bytes INTEGER")
    if "gpu_name" not in columns:
        db.execute_sql("ALTER TABLE workers ADD COLUMN gpu_name VARCHAR(128)")


MIGRATIONS: list[tuple[str, Callable[[SqliteDatabase], None]]] = [
    ("m001_initial", m001_initial),
    ("m002_models", m002_models),
    ("m003_node_models", m003_node_models),
    ("m004_node_model_source", m004_node_model_source),
    ("m005_node_worker_access", m005_node_worker_access),
    ("m006_model_device", m006_model_device),
    ("m007_worker_vram", m007_worker_vram),
]


def apply_migrations(db: SqliteDatabase) -> list[str]:
    db.execute_sql(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    done = {row[0] for row in db.execute_sql("SELECT name FROM _migrations").fetchall()}
    applied = []
    for name, migrate in MIGRATIONS:
        if name in done:
            continue
        with db.atomic():
            migrate(db)
            db.execute_sql(
                "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                (name, datetime.now(UTC).isoformat()),
            )
        applied.append(name)
    return applied
