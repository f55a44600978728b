"""A real queen process on a real PostgreSQL server: `--database postgresql://...`,
the password from a 0600 file; nodes added over a real sshd are rows on the
server, and the server's outages answer 503 STORE_UNAVAILABLE until it is back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from rbee_queen.secrets import load_secret_file
from rbee_queen.store.db import open_database
from rbee_queen.store.tables import Node
from tests.plugins.postgres import PostgresDatabase
from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.plugins.sshd import SshServer
from tests.test_config_queen import settings
from tests.test_store_outage import add_model, assert_unavailable, model_names


@pytest.fixture
def pg_queen(
    postgres_database: PostgresDatabase, monkeypatch: pytest.MonkeyPatch, rbee_home: Path
) -> Iterator[QueenProcess]:
    monkeypatch.setenv("RBEE_DATABASE_PASSWORD_FILE", str(postgres_database.password_file))
    monkeypatch.setenv("RBEE_DB_BUSY_TIMEOUT_MS", "300")
    monkeypatch.setenv("RBEE_HEALTH_INTERVAL", "0")
    queen = start_queen(rbee_home, "--database", str(postgres_database.url))
    try:
        yield queen
    finally:
        stop_queen(queen)


def rows(database: PostgresDatabase, query: str) -> list[tuple[object, ...]]:
    password = load_secret_file(database.password_file)
    with psycopg.connect(str(database.url), password=password) as conn:
        return conn.execute(query).fetchall()


def seed_node(database: PostgresDatabase, name: str) -> None:
    db = open_database(database.url, password_file=database.password_file)
    try:
        Node.create(name=name, ssh_host="h", ssh_user="u", ssh_key_path="k", install_path="/i")
    finally:
        db.close()


def test_a_queen_on_postgresql_adds_and_lists_a_node(
    pg_queen: QueenProcess, postgres_database: PostgresDatabase, sshd: SshServer, tmp_path: Path
) -> None:
    pg_queen.add_node(sshd.node_body("n1", tmp_path / "inst", accept_new_host_key=True))
    with pg_queen.client() as c:
        listed = c.get("/v2/registry/beehives/list").json()["nodes"]
    assert [(n["node_name"], n["status"]) for n in listed] == [("n1", "reachable")]
    assert rows(postgres_database, "SELECT name, ssh_port FROM nodes") == [("n1", sshd.port)]
    # No SQLite file, and no backups of one, beside the queen.
    assert not (pg_queen.home / "queen.db").exists()
    assert not (pg_queen.home / "backups").exists()
    # The URL is shown as given; the password is nowhere the user or `ps` looks.
    shown = settings(pg_queen)["paths.database"]
    assert shown["value"] == str(postgres_database.url)
    password = load_secret_file(postgres_database.password_file)
    cmdline = Path(f"/proc/{pg_queen.proc.pid}/cmdline").read_bytes().decode()
    assert password not in cmdline + pg_queen.log + str(settings(pg_queen))


def test_a_locked_table_then_a_dropped_connection_are_503_and_pass(
    pg_queen: QueenProcess, postgres_database: PostgresDatabase
) -> None:
    seed_node(postgres_database, "gpu1")  # the node the models name
    assert add_model(pg_queen, "before").status_code == 201
    password = load_secret_file(postgres_database.password_file)
    with psycopg.connect(str(postgres_database.url), password=password) as other:
        other.execute("LOCK TABLE models IN EXCLUSIVE MODE")  # another writer holds it
        assert_unavailable(add_model(pg_queen, "during"))
        assert model_names(pg_queen) == ["before"]  # reads are served
    assert add_model(pg_queen, "after").status_code == 201
    with postgres_database.server.admin() as admin:  # as a server restart would
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND application_name = 'rbee-queen'",
            (postgres_database.url.dbname,),
        )
    answers = [add_model(pg_queen, f"again{i}") for i in range(2)]
    # The request that met the dropped connection (if the queen's own loops
    # did not meet it first) is a 503; the next one is served on a new one.
    assert answers[-1].status_code == 201, answers[-1].text
    for answer in answers[:-1]:
        if answer.status_code != 201:
            assert_unavailable(answer)
    served = {f"again{i}" for i, answer in enumerate(answers) if answer.status_code == 201}
    assert set(model_names(pg_queen)) == {"before", "after"} | served  # nothing half-written
