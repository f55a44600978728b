"""The database setting's PostgreSQL form: a URL from the flag, the environment
or queen.toml, never with a password in it (that comes from a 0600 file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rbee_queen import database_url
from rbee_queen.config import QueenConfig, effective
from rbee_queen.config_load import ConfigInvalid
from rbee_queen.database_url import PostgresUrl

URL = "postgresql://rbee@db.example:5432/inventory"


def load(tmp_path: Path, toml: str = "", **env: str) -> QueenConfig:
    (tmp_path / "queen.toml").write_text(toml)
    environ = {"RBEE_HOME": str(tmp_path), **env}
    return QueenConfig.load(config_file=tmp_path / "queen.toml", environ=environ)


def problems(tmp_path: Path, toml: str = "", **env: str) -> list[str]:
    with pytest.raises(ConfigInvalid) as invalid:
        load(tmp_path, toml, **env)
    return invalid.value.problems


def test_a_url_in_the_file_is_the_store_and_shown_as_given(tmp_path: Path) -> None:
    config = load(tmp_path, f'[paths]\ndatabase = "{URL}"\n')
    assert config.store_location == PostgresUrl.parse(URL)
    assert config.db_path is None  # no SQLite file: no backups, no recovery
    shown = {row["key"]: row["value"] for row in effective(config)}
    assert shown["paths.database"] == URL


def test_a_path_is_still_a_sqlite_file_beside_the_config(tmp_path: Path) -> None:
    config = load(tmp_path, '[paths]\ndatabase = "state/q.db"\n')
    assert config.store_location == tmp_path / "state" / "q.db" == config.db_path


def test_a_password_in_the_url_is_refused_and_never_echoed(tmp_path: Path) -> None:
    found = problems(tmp_path, RBEE_DATABASE="postgresql://rbee:hunter2@db.example/inventory")
    assert len(found) == 1 and "password in the URL is refused" in found[0]
    assert "hunter2" not in found[0]
    found = problems(tmp_path, f'[paths]\ndatabase = "{URL}?password=hunter2"\n')
    assert "may not set password" in found[0] and "hunter2" not in found[0]


@pytest.mark.parametrize(
    "bad", ["postgresql://rbee@db.example:5432/", "postgresql://rbee@db.example:99999/x"]
)
def test_a_url_without_a_database_or_with_a_bad_port_is_refused(tmp_path: Path, bad: str) -> None:
    found = problems(tmp_path, RBEE_DATABASE=bad)
    assert found == [
        f"paths.database = '{bad}' (from environment RBEE_DATABASE):"
        f" expected postgresql://user@host:port/dbname{' (no database named)' * bad.endswith('/')}"
    ]


def test_the_password_file_must_be_the_owners_alone(tmp_path: Path) -> None:
    secret = tmp_path / "pg-password"
    secret.write_text("hunter2\n")
    secret.chmod(0o644)
    found = problems(tmp_path, RBEE_DATABASE=URL, RBEE_DATABASE_PASSWORD_FILE=str(secret))
    assert len(found) == 1 and "[SECRET_INVALID]" in found[0] and "hunter2" not in found[0]
    secret.chmod(0o600)
    assert load(tmp_path, RBEE_DATABASE=URL, RBEE_DATABASE_PASSWORD_FILE=str(secret))


def test_a_url_without_the_driver_installed_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database_url, "find_spec", lambda name: None)  # as without the extra
    assert problems(tmp_path, RBEE_DATABASE=URL) == [
        f"paths.database = '{URL}' (from environment RBEE_DATABASE):"
        " the PostgreSQL driver is missing: pip install 'rbee[postgres]'"
    ]
