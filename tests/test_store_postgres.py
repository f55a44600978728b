"""The store on both backends: a new SQLite file and a new database on a real
PostgreSQL server (tests/plugins/postgres.py), the same test bodies."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from peewee import Database, IntegrityError, PostgresqlDatabase, SqliteDatabase

from rbee_queen.store.db import ALL_TABLES, open_database
from rbee_queen.store.migrations import MIGRATIONS, apply_migrations
from rbee_queen.store.tables import Node, NodeModel, Worker
from tests.plugins.postgres import StoreTarget


@pytest.fixture
def store(store_target: StoreTarget) -> Iterator[Database]:
    db = open_database(store_target.location, password_file=store_target.password_file)
    try:
        yield db
    finally:
        db.close()


def test_a_new_database_gets_every_migration_once(
    store: Database, store_target: StoreTarget
) -> None:
    expected = {"sqlite": SqliteDatabase, "postgresql": PostgresqlDatabase}[store_target.backend]
    assert isinstance(store, expected)
    done = [row[0] for row in store.execute_sql("SELECT name FROM _migrations ORDER BY name")]
    assert done == sorted(name for name, _ in MIGRATIONS)
    assert apply_migrations(store) == []  # a second start applies nothing
    tables = set(store.get_tables())
    assert {t._meta.table_name for t in ALL_TABLES} <= tables


def test_byte_counts_past_two_gib_round_trip(store: Database) -> None:
    Node.create(name="gpu1", ssh_host="h", ssh_user="u", ssh_key_path="k", install_path="/i")
    big = 70 * 2**30  # a 70 GiB model: past PostgreSQL's 32-bit INTEGER
    NodeModel.create(node="gpu1", ref="hf:Org/Big", provider="hf", local_path="/m", size_bytes=big)
    Worker.create(
        worker_id="w1", node="gpu1", model_ref="hf:Org/Big", state="ready", vram_bytes=big
    )
    assert NodeModel.get(NodeModel.ref == "hf:Org/Big").size_bytes == big
    assert Worker.get_by_id("w1").vram_bytes == big


def test_a_duplicate_name_is_an_integrity_error(store: Database) -> None:
    fields = {"ssh_host": "h", "ssh_user": "u", "ssh_key_path": "k", "install_path": "/i"}
    Node.create(name="gpu1", **fields)
    with pytest.raises(IntegrityError):
        Node.create(name="gpu1", **fields)
    assert Node.select().count() == 1  # the store goes on after the refused row
