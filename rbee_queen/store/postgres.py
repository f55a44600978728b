"""The queen's database on a PostgreSQL server (`paths.database` a URL).

peewee speaks PostgreSQL through psycopg 3 (the `postgres` extra). What
SQLite's file gives by itself is set per connection here: a write waits for a
lock at most `database.busy_timeout_ms` (PostgreSQL's lock_timeout), times are
UTC, and a connect gives up after a few seconds. A connection the server
dropped (a restart, a failover, an idle kill) fails the request it was lost
in (503 STORE_UNAVAILABLE) and is replaced before the next statement.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from peewee import DatabaseError, ImproperlyConfigured, PostgresqlDatabase

from rbee_queen.database_url import PostgresUrl
from rbee_queen.secrets import load_secret_file

CONNECT_TIMEOUT_S = 5


class ReconnectingPostgres(PostgresqlDatabase):
    """A PostgresqlDatabase that drops a broken connection between statements."""

    def cursor(self, named_cursor: Any = None) -> Any:
        if not self.is_closed() and not self.in_transaction() and not self._usable():
            self.discard_connection()
        return super().cursor(named_cursor)

    def _usable(self) -> bool:
        """peewee's check, and not still "running a command" between statements:
        a statement the server's drop cut short can leave the connection so,
        and its next query then fails with "another command is already in
        progress" (peewee counts that state usable)."""
        from psycopg.pq import TransactionStatus  # the `postgres` extra's

        status = self.connection().pgconn.transaction_status
        return bool(self.is_connection_usable()) and status != TransactionStatus.ACTIVE

    def discard_connection(self) -> None:
        """Forget this thread's connection; the next statement connects anew."""
        try:
            self.close()  # resets the state even when closing fails
        except DatabaseError:  # already broken: closing it may fail too
            pass


def connect_params(url: PostgresUrl, busy_timeout_ms: int, password_file: Path | None) -> dict:
    """psycopg's keyword arguments besides the URL: timeouts, UTC, the password."""
    given = {key.lower() for key, _ in parse_qsl(urlsplit(url.text).query)}
    params: dict[str, Any] = {
        "options": f"-c lock_timeout={busy_timeout_ms} -c TimeZone=UTC",
        "application_name": "rbee-queen",
    }
    if "connect_timeout" not in given:
        params["connect_timeout"] = CONNECT_TIMEOUT_S
    if password_file is not None:
        params["password"] = load_secret_file(password_file)  # 0600, one line
    return params


def postgres_database(
    url: PostgresUrl, busy_timeout_ms: int, password_file: Path | None
) -> ReconnectingPostgres:
    db = ReconnectingPostgres(url.text, **connect_params(url, busy_timeout_ms, password_file))
    try:
        db._adapter.check_driver()  # type: ignore[attr-defined]
    except ImproperlyConfigured:
        raise ImproperlyConfigured(
            "paths.database is a PostgreSQL URL but psycopg is not installed:"
            " pip install 'rbee[postgres]'"
        ) from None
    return db
