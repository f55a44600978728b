"""A real PostgreSQL server for the store's tests, started once per session.

`initdb` into a temporary folder and `postgres` on a free loopback port (and a
socket in the same folder), run as the `postgres` user when the tests run as
root, since the server refuses root. The superuser `rbee` has a password,
given to the queen by a 0600 file as a user would; each test that asks for
`postgres_url` gets a fresh database copied from an empty template. A server
that cannot start fails the session's PostgreSQL tests: nothing is skipped.
"""

from __future__ import annotations

import itertools
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from peewee import Database

from rbee_queen.database_url import PostgresUrl
from rbee_queen.store.db import StoreLocation, open_database

START_TIMEOUT_S = 30.0
SUPERUSER = "rbee"
# Durability is not under test: fsync off makes CREATE DATABASE and DDL fast.
SERVER_SETTINGS = (
    "fsync=off",
    "full_page_writes=off",
    "synchronous_commit=off",
    "shared_buffers=16MB",
    "max_connections=100",
    "listen_addresses=127.0.0.1",
)


def postgres_bin() -> Path:
    """Debian's binaries live under /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    )
    if not versions:
        pytest.fail("PostgreSQL is not installed (scripts/bootstrap installs it)")
    return versions[-1].parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    root: Path
    port: int
    password_file: Path  # the superuser's password, mode 0600, for the queen
    proc: subprocess.Popen[bytes]
    _names: itertools.count[int]

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        """A superuser connection over the socket (trusted: no password)."""
        return psycopg.connect(
            host=str(self.root), port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True
        )

    def url(self, dbname: str) -> PostgresUrl:
        return PostgresUrl.parse(f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}")

    def new_database(self) -> str:
        name = f"rbee_test_{next(self._names)}"
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE template0 STRATEGY FILE_COPY")
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def as_server_user(path: Path, user: str | None) -> None:
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def init_cluster(bin_dir: Path, root: Path, user: str | None) -> Path:
    """initdb with trust on the socket and a password (scram) over TCP."""
    password = secrets.token_urlsafe(16)
    password_file = root / "password"
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    server_pw = root / "initdb-pw"
    server_pw.write_text(password + "\n")
    as_server_user(server_pw, user)
    data = root / "data"
    # --no-locale: names sort bytewise, as SQLite sorts them.
    run = subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--pwfile", str(server_pw)]
        + ["--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale"]
        + ["--no-sync"],
        user=user,
        capture_output=True,
        text=True,
    )
    server_pw.unlink()
    if run.returncode != 0:
        pytest.fail(f"initdb failed ({run.returncode}): {run.stderr[-2000:]}")
    return password_file


def wait_ready(server: PostgresServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if server.proc.poll() is not None:
            log = (server.root / "server.log").read_text(errors="replace")[-2000:]
            pytest.fail(f"postgres exited with {server.proc.returncode}:\n{log}")
        try:
            server.admin().close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                pytest.fail("postgres did not accept connections within 30 s")
            time.sleep(0.05)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bin_dir = postgres_bin()
    user = "postgres" if os.geteuid() == 0 else None  # postgres refuses to run as root
    root = Path(tempfile.mkdtemp(prefix="rbee-pg-"))
    try:
        as_server_user(root, user)
        password_file = init_cluster(bin_dir, root, user)
        server = start_server(bin_dir, root, user, password_file)
        try:
            wait_ready(server)
            yield server
        finally:
            stop_server(server.proc)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def start_server(
    bin_dir: Path, root: Path, user: str | None, password_file: Path
) -> PostgresServer:
    port = free_port()
    settings = [arg for s in SERVER_SETTINGS for arg in ("-c", s)]
    with open(root / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [str(bin_dir / "postgres"), "-D", str(root / "data"), "-p", str(port)]
            + ["-k", str(root), *settings],
            user=user,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return PostgresServer(root, port, password_file, proc, itertools.count(1))


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)  # a fast shutdown: open sessions are ended
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass(frozen=True)
class PostgresDatabase:
    url: PostgresUrl
    password_file: Path
    server: PostgresServer


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> Iterator[PostgresDatabase]:
    """A fresh, empty database of its own on the session's server."""
    name = postgres_server.new_database()
    try:
        yield PostgresDatabase(
            postgres_server.url(name), postgres_server.password_file, postgres_server
        )
    finally:
        postgres_server.drop_database(name)


@dataclass(frozen=True)
class StoreTarget:
    """Where a store test's database lives: a SQLite file or a PostgreSQL URL."""

    location: StoreLocation
    password_file: Path | None = None

    @property
    def backend(self) -> str:
        return "sqlite" if isinstance(self.location, Path) else "postgresql"

    def open(self, busy_timeout_ms: int = 5000) -> Database:
        """The queen's store on it, migrated, its tables bound to it."""
        return open_database(self.location, busy_timeout_ms, self.password_file)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> StoreTarget:
    """The same test on both backends: a new SQLite file, or a new database
    on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return StoreTarget(tmp_path / "queen.db")
    database: PostgresDatabase = request.getfixturevalue("postgres_database")
    return StoreTarget(database.url, database.password_file)
