"""Append-only, named migrations recorded in a table.

Never edit or reorder an applied migration: add `m00N_...` at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from peewee import SqliteDatabase


def m001_initial(db: SqliteDatabase) -> None:
    from rbee_queen.store.models import Node, Worker, WorkerEvent

    db.create_tables([Node, Worker, WorkerEvent])


def m002_models(db: SqliteDatabase) -> None:
    from rbee_queen.store.models import ModelEntry

    db.create_tables([ModelEntry])


def m003_node_models(db: SqliteDatabase) -> None:
    from rbee_queen.store.models import NodeModel

    db.create_tables([NodeModel])


MIGRATIONS: list[tuple[str, Callable[[SqliteDatabase], None]]] = [
    ("m001_initial", m001_initial),
    ("m002_models", m002_models),
    ("m003_node_models", m003_node_models),
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
