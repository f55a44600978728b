"""The store on both backends: a new SQLite file and a new database on a real
PostgreSQL server (tests/plugins/postgres.py), the same test bodies."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from peewee import Database, DatabaseError, IntegrityError, PostgresqlDatabase, SqliteDatabase

from rbee_queen.api.errors import store_outage
from rbee_queen.errors import ModelAlreadyExists, StoreUnavailable
from rbee_queen.models import node_models
from rbee_queen.models.catalog import ModelCatalog, Placement, list_models, model_json
from rbee_queen.secrets import load_secret_file
from rbee_queen.store.db import ALL_TABLES, open_database
from rbee_queen.store.migrations import MIGRATION_LOCK_KEY, MIGRATIONS, apply_migrations
from rbee_queen.store.tables import ModelEntry, Node, NodeModel, Worker, utcnow
from tests.plugins.postgres import PostgresDatabase, StoreTarget
from tests.plugins.sshd import free_port


@pytest.fixture
def store(store_target: StoreTarget) -> Iterator[Database]:
    db = store_target.open()
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


def test_a_dropped_connection_is_an_outage_then_reconnects(
    postgres_database: PostgresDatabase,
) -> None:
    db = open_database(postgres_database.url, password_file=postgres_database.password_file)
    try:
        Node.create(name="gpu1", ssh_host="h", ssh_user="u", ssh_key_path="k", install_path="/i")
        with postgres_database.server.admin() as admin:  # as a server restart would
            dropped = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (postgres_database.url.dbname,),
            ).fetchall()
        assert dropped == [(True,)]
        with pytest.raises(DatabaseError) as lost:
            Node.select().count()
        outage = store_outage(lost.value)
        assert outage is not None and outage.code == "STORE_UNAVAILABLE"
        assert Node.select().count() == 1  # the next statement connected anew
    finally:
        db.close()


def test_a_lock_held_past_the_busy_timeout_is_an_outage(
    postgres_database: PostgresDatabase,
) -> None:
    url, password = postgres_database.url, postgres_database.password_file
    db = open_database(url, busy_timeout_ms=200, password_file=password)
    try:
        with psycopg.connect(str(url), password=load_secret_file(password)) as other:
            other.execute("LOCK TABLE nodes IN EXCLUSIVE MODE")  # another writer holds it
            with pytest.raises(DatabaseError) as locked:
                Node.create(
                    name="n", ssh_host="h", ssh_user="u", ssh_key_path="k", install_path="/"
                )
            assert "lock timeout" in str(locked.value)
            assert store_outage(locked.value) is not None
            assert Node.select().count() == 0  # reads go on
        Node.create(name="n", ssh_host="h", ssh_user="u", ssh_key_path="k", install_path="/")
    finally:
        db.close()


def test_a_bad_query_is_not_an_outage(store: Database) -> None:
    with pytest.raises(DatabaseError) as bad:
        store.execute_sql("SELECT no_such_column FROM nodes")
    assert store_outage(bad.value) is None  # a bug: 500, not 503
    assert Node.select().count() == 0  # and the store goes on


def test_nodes_models_and_their_rows_round_trip(store: Database) -> None:
    catalog = ModelCatalog()
    node = Node.create(name="gpu1", ssh_host="h", ssh_user="u", ssh_key_path="k", install_path="/i")
    catalog.add("tiny", "hf:Org/Tiny", ["gpu1"], slots=2, device="cuda:0")
    catalog.add("base", "hf:Org/Base", ["gpu1"], slots=1)
    assert [model_json(m)["name"] for m in list_models()] == ["base", "tiny"]
    assert catalog.placement("tiny", None, None) == Placement("hf:Org/Tiny", ["gpu1"], 2, "cuda:0")
    files = [{"name": "model.safetensors", "size": 3 * 2**30, "sha256": "ab" * 32}]
    node_models.record(node, node_models.parse_ref("hf:Org/Tiny"), "hf", "/m/tiny", files)
    (row,) = node_models.entries("gpu1")
    shown = node_models.entry_json(row)
    assert shown["size_bytes"] == 3 * 2**30 and shown["files"] == files
    assert shown["downloaded_at"].endswith("+00:00")  # UTC, said so, on both backends
    with pytest.raises(ModelAlreadyExists):
        catalog.add("tiny", "hf:Org/Other", ["gpu1"], slots=1)
    catalog.remove("base")
    node.delete_instance()  # its models on disk go with it (ON DELETE CASCADE)
    assert [m.name for m in list_models()] == ["tiny"] and node_models.entries() == []


def test_a_time_reads_back_as_written(store: Database) -> None:
    when = datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=UTC)
    Node.create(
        name="n",
        ssh_host="h",
        ssh_user="u",
        ssh_key_path="k",
        install_path="/",
        last_connected=when,
    )
    back = Node.get_by_id("n").last_connected
    assert back == when and back.utcoffset() == timedelta(0)
    assert (utcnow() - Node.get_by_id("n").created_at).total_seconds() < 60


def test_a_socket_url_without_a_password_reaches_the_server(
    postgres_database: PostgresDatabase,
) -> None:
    server = postgres_database.server  # the socket is trusted; TCP asks for the password
    url = f"postgresql://rbee@/{postgres_database.url.dbname}?host={server.root}&port={server.port}"
    db = open_database(url)
    try:
        assert [r[0] for r in db.execute_sql("SELECT count(*) FROM _migrations")] == [
            len(MIGRATIONS)
        ]
    finally:
        db.close()


# One queen's start, as far as the store goes: open and migrate.
MIGRATE = (
    "import sys, pathlib; from rbee_queen.store.db import open_database;"
    " open_database(sys.argv[1], int(sys.argv[3]), pathlib.Path(sys.argv[2]))"
)


def test_two_queens_starting_together_migrate_once(postgres_database: PostgresDatabase) -> None:
    url, password = str(postgres_database.url), str(postgres_database.password_file)
    starts = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE, url, password, "5000"], stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    errors = [p.communicate(timeout=60)[1].decode() for p in starts]
    assert [p.returncode for p in starts] == [0, 0], errors
    db = open_database(postgres_database.url, password_file=postgres_database.password_file)
    try:
        names = [r[0] for r in db.execute_sql("SELECT name FROM _migrations")]
        assert sorted(names) == sorted(name for name, _ in MIGRATIONS)  # each once
    finally:
        db.close()


def test_a_server_that_is_not_there_is_store_unavailable_at_open(
    postgres_database: PostgresDatabase,
) -> None:
    closed = free_port()  # nothing listens there
    url = f"postgresql://rbee@127.0.0.1:{closed}/{postgres_database.url.dbname}"
    with pytest.raises(StoreUnavailable) as refused:
        open_database(url, password_file=postgres_database.password_file)
    message = refused.value.message
    assert message.startswith(f"cannot open the database {url}: ") and "\n" not in message
    assert load_secret_file(postgres_database.password_file) not in message


@pytest.mark.parametrize(
    ("migration", "table", "column"),
    [
        ("m005_node_worker_access", "nodes", "worker_access"),
        ("m006_model_device", "models", "device"),
    ],
)
def test_a_database_from_before_a_migration_gets_it(
    store_target: StoreTarget, migration: str, table: str, column: str
) -> None:
    db = store_target.open()
    try:
        Node.create(name="old", ssh_host="h", ssh_user="u", ssh_key_path="k", install_path="/")
        ModelEntry.create(name="old", model_ref="hf:Org/Old", nodes=["old"])
        db.execute_sql(f"ALTER TABLE {table} DROP COLUMN {column}")  # as an older queen left it
        db.execute_sql(f"DELETE FROM _migrations WHERE name = {db.param}", (migration,))
        assert apply_migrations(db) == [migration]
        assert column in {c.name for c in db.get_columns(table)}
        default = {"worker_access": "ssh", "device": "cpu"}[column]
        assert [r[0] for r in db.execute_sql(f"SELECT {column} FROM {table}")] == [default]
    finally:
        db.close()


def test_a_start_waits_for_another_queens_migrations_past_the_busy_timeout(
    postgres_database: PostgresDatabase,
) -> None:
    url, password = postgres_database.url, postgres_database.password_file
    with psycopg.connect(str(url), password=load_secret_file(password), autocommit=True) as other:
        other.execute(f"SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})")  # migrating, slowly
        start = subprocess.Popen([sys.executable, "-c", MIGRATE, str(url), str(password), "200"])
        waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        deadline = time.monotonic() + 30
        while other.execute(waiting).fetchone() != (1,):  # the start reached the lock
            assert start.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(subprocess.TimeoutExpired):
            start.wait(timeout=1.0)  # five busy timeouts on: still waiting, not failed
        other.execute(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})")
    assert start.wait(timeout=60) == 0
    db = open_database(url, busy_timeout_ms=200, password_file=password)
    try:  # the busy timeout is back in force after the migrations
        assert [r[0] for r in db.execute_sql("SHOW lock_timeout")] == ["200ms"]
    finally:
        db.close()
