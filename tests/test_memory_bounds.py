"""A worker's memory bound set per model, per node or queen-wide (first one set
wins, the RAM estimate last), and the bound an OOM kill raised, kept in the
database: a real SQLite file, closed and opened again as a restarted queen does."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from peewee import Database

from rbee_queen.store.db import open_database
from rbee_queen.store.tables import ModelEntry, Node, RaisedMemoryBound
from rbee_queen.workers.memory_bounds import BoundSetting, RaisedBounds, bound_setting, source_of

REF = "file:/models/m"
OOM = {"oom_kills": 1, "limit_bytes": 100, "peak_bytes": 100}


def add_node(name: str, limit_mib: int = 0) -> Node:
    return Node.create(
        name=name,
        ssh_host="h",
        ssh_user="u",
        ssh_key_path="",
        install_path="/i",
        worker_memory_limit_mib=limit_mib,
    )


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(tmp_path / "queen.db")
    yield database
    database.close()


def test_the_model_then_the_node_then_the_queen_then_the_estimate(db: Database) -> None:
    plain, bounded = add_node("plain"), add_node("bounded", 2048)
    assert bound_setting(plain, REF, 0) == BoundSetting(0, "estimate")
    assert bound_setting(plain, REF, 512) == BoundSetting(512, "queen")
    assert bound_setting(bounded, REF, 512) == BoundSetting(2048, "node")
    ModelEntry.create(name="a", model_ref=REF, nodes=["plain"], memory_limit_mib=300)
    ModelEntry.create(name="b", model_ref=REF, nodes=["plain"])  # unset: does not count
    assert bound_setting(bounded, REF, 512) == BoundSetting(300, "model")
    ModelEntry.create(name="c", model_ref=REF, nodes=["plain"], memory_limit_mib=400)
    assert bound_setting(plain, REF, 0) == BoundSetting(400, "model")  # shared: the largest
    assert bound_setting(plain, "file:/other", 0) == BoundSetting(0, "estimate")
    ModelEntry.update(memory_limit_mib=-1).where(ModelEntry.name == "a").execute()
    assert bound_setting(plain, REF, 0) == BoundSetting(-1, "model")  # none beats any size
    assert source_of(0, BoundSetting(-1, "model"), None) == "none"
    assert source_of(150, BoundSetting(100, "node"), 150) == "oom"
    assert source_of(900, BoundSetting(900, "node"), 150) == "node"


def test_a_raised_bound_outlives_the_database_connection(tmp_path: Path) -> None:
    path = tmp_path / "queen.db"
    database = open_database(path)
    add_node("n1"), add_node("n2")
    bounds = RaisedBounds()
    assert bounds.next_limit("n1", REF) is None
    assert bounds.raise_after("n1", REF, OOM) == 150  # type: ignore[arg-type]
    database.close()
    database = open_database(path)  # as a restarted queen opens it
    try:
        assert RaisedBounds().next_limit("n1", REF) == 150
        second = {"oom_kills": 1, "limit_bytes": 100, "peak_bytes": 90}
        assert bounds.raise_after("n1", REF, second) == 225  # type: ignore[arg-type]
        assert bounds.next_limit("n1", REF) == 225 and bounds.next_limit("n2", REF) is None
        assert RaisedMemoryBound.select().count() == 1
        Node.get_by_id("n1").delete_instance(recursive=True)
        assert RaisedMemoryBound.select().count() == 0  # a removed node's bounds go with it
    finally:
        database.close()


def test_m009_adds_the_columns_and_the_table_to_an_older_database(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    database = open_database(path)
    add_node("n1", 700)
    database.close()
    with sqlite3.connect(path) as old:  # back to the database as it was before m009
        old.execute("DROP TABLE raised_memory_bounds")
        old.execute("ALTER TABLE nodes DROP COLUMN worker_memory_limit_mib")
        old.execute("ALTER TABLE models DROP COLUMN memory_limit_mib")
        old.execute("ALTER TABLE workers DROP COLUMN memory_limit_bytes")
        old.execute("ALTER TABLE workers DROP COLUMN memory_limit_source")
        old.execute("DELETE FROM _migrations WHERE name = 'm009_memory_bounds'")
    database = open_database(path)
    try:
        node = Node.get_by_id("n1")
        assert node.worker_memory_limit_mib == 0  # the column's default for an old row
        assert RaisedBounds().raise_after("n1", REF, OOM) == 150  # type: ignore[arg-type]
    finally:
        database.close()
