"""The database setting's PostgreSQL form: `postgresql://user@host:port/dbname`.

`paths.database` is a SQLite file's path unless it starts with `postgresql://`
(or `postgres://`). A password is refused in the URL, since the URL is shown
in logs, errors, `ps` and GET /v2/admin/config: it comes from
`database.password_file` (mode 0600) or libpq's own PGPASSFILE / ~/.pgpass.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.util import find_spec
from urllib.parse import parse_qsl, urlsplit

SCHEMES = ("postgresql", "postgres")
# Query parameters that would carry a secret or replace the URL's own parts.
REFUSED_PARAMS = frozenset({"password", "passfile", "dbname", "user"})


def is_database_url(value: object) -> bool:
    return isinstance(value, str) and value.partition("://")[0].lower() in SCHEMES


@dataclass(frozen=True)
class PostgresUrl:
    """A checked PostgreSQL URL with no password in it; `str()` gives it back."""

    text: str
    dbname: str

    @classmethod
    def parse(cls, text: str) -> PostgresUrl:
        """The URL checked; ValueError says what is wrong (never echoing a password)."""
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - raises ValueError on a port out of range
        except ValueError:
            raise ValueError("expected postgresql://user@host:port/dbname") from None
        if parts.password is not None:
            raise ValueError(
                "a password in the URL is refused (it would show in logs and ps): "
                "put it in the file database.password_file names (mode 0600) or a PGPASSFILE"
            )
        params = {key.lower() for key, _ in parse_qsl(parts.query, keep_blank_values=True)}
        if params & REFUSED_PARAMS:
            raise ValueError(
                f"the URL may not set {', '.join(sorted(params & REFUSED_PARAMS))}:"
                " give user and database in the URL itself, a password in a file"
            )
        dbname = parts.path.lstrip("/")
        if not dbname or "/" in dbname:
            raise ValueError("expected postgresql://user@host:port/dbname (no database named)")
        if find_spec("psycopg") is None:
            raise ValueError("the PostgreSQL driver is missing: pip install 'rbee[postgres]'")
        return cls(text, dbname)

    def __str__(self) -> str:
        return self.text


def redact_password(value: object) -> object:
    """A URL's password replaced by `***`, for a message about a refused value."""
    if not is_database_url(value):
        return value
    assert isinstance(value, str)
    try:
        parts = urlsplit(value)
        if parts.password is None:
            return value
    except ValueError:
        return f"{value.partition('://')[0]}://***"
    user = f"{parts.username}:" if parts.username else ":"
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}***@{host}").geturl()
