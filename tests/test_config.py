"""The queen's and the keeper's settings: precedence, validation, the schema as
the one source of the docs and the example file."""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from rbee_keeper.cli import build_parser
from rbee_keeper.keeper_config import load_keeper_settings
from rbee_queen.config import QueenConfig, effective
from rbee_queen.config_docs import example_toml, markdown_table
from rbee_queen.config_load import ConfigInvalid
from rbee_queen.config_schema import SETTINGS
from rbee_queen.errors import ConfigRejected

ROOT = Path(__file__).resolve().parent.parent


def load(
    home: Path, text: str | None = None, flags: dict[str, object] | None = None, **env: str
) -> QueenConfig:
    if text is not None:
        (home / "queen.toml").write_text(text)
    return QueenConfig.load(flags=flags, environ={"RBEE_HOME": str(home), **env})


def test_a_flag_beats_the_environment_which_beats_the_file_which_beats_the_default(
    tmp_path: Path,
) -> None:
    assert load(tmp_path).port == 8080
    assert load(tmp_path, "[server]\nport = 9001\n").port == 9001
    assert load(tmp_path, RBEE_QUEEN_PORT="9002").port == 9002
    config = load(tmp_path, flags={"server.port": 9003}, RBEE_QUEEN_PORT="9002")
    assert config.port == 9003
    sources = {row["key"]: row["source"] for row in effective(config)}
    assert sources["server.port"] == "flag"
    assert sources["health.interval_s"] == "default"
    config = load(tmp_path, "[health]\ninterval_s = 2\n", RBEE_RESTART_MAX_ATTEMPTS="7")
    sources = {row["key"]: row["source"] for row in effective(config)}
    assert (config.health_interval_s, config.restart_max_attempts) == (2.0, 7)
    assert sources["health.interval_s"] == "file"
    assert sources["restart.max_attempts"] == "environment RBEE_RESTART_MAX_ATTEMPTS"


def test_every_problem_is_reported_at_once_with_a_suggestion(tmp_path: Path) -> None:
    bad = '[server]\nport = 80\nhots = "x"\n[helth]\na = 1\n[restart]\nmax_attempts = 2.5\n'
    with pytest.raises(ConfigInvalid) as caught:
        load(tmp_path, bad, RBEE_HEALTH_INTERVAL="soon", RBEE_LOG_LEVEL="loud")
    text = str(caught.value)
    assert len(caught.value.problems) == 6, text
    assert "unknown key server.hots (did you mean 'host'?)" in text
    assert "unknown section [helth] (did you mean 'health'?)" in text
    assert "restart.max_attempts = 2.5 (from file): expected an integer in 0..100" in text
    assert "health.interval_s = 'soon' (from environment RBEE_HEALTH_INTERVAL)" in text
    assert "server.log_level = 'loud'" in text and "one of debug, info, warning, error" in text
    assert "server.port = 80 (from file): below 1024" in text


def test_a_low_port_needs_the_file_to_say_so(tmp_path: Path) -> None:
    assert load(tmp_path, "[server]\nport = 443\nallow_low_port = true\n").port == 443


def test_a_named_file_must_exist_and_paths_are_relative_to_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigInvalid, match="no such file"):
        load(tmp_path, RBEE_CONFIG=str(tmp_path / "absent.toml"))
    other = tmp_path / "etc" / "queen.toml"
    other.parent.mkdir()
    other.write_text('[paths]\ndatabase = "state/q.db"\n')
    config = load(tmp_path, RBEE_CONFIG=str(other))
    assert config.db_path == tmp_path / "etc" / "state" / "q.db"


def test_a_secret_file_others_may_read_is_refused(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("abc\n")
    token.chmod(0o644)
    with pytest.raises(ConfigInvalid, match=r"paths.token_file .*chmod 600"):
        load(tmp_path, f'[paths]\ntoken_file = "{token}"\n')
    token.chmod(0o600)
    assert load(tmp_path, f'[paths]\ntoken_file = "{token}"\n').token_file == token


def test_the_schema_covers_every_setting_of_the_queen_once() -> None:
    named = [s.field for s in SETTINGS]
    assert len(named) == len(set(named)) and len({s.path for s in SETTINGS}) == len(SETTINGS)
    own = {f.name for f in fields(QueenConfig)} - {"home", "origin"}
    assert own == set(named)
    defaults = QueenConfig(home=Path("/h"))
    for s in SETTINGS:
        if not s.is_path:
            assert getattr(defaults, s.field) == s.default, s.path


def test_the_doc_and_the_example_are_what_the_schema_writes() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert markdown_table() in doc, "run: python -m rbee_queen.config_docs"
    assert (ROOT / "queen.example.toml").read_text() == example_toml()


def test_the_example_uncommented_is_valid_and_holds_the_defaults(tmp_path: Path) -> None:
    text = re.sub(r"^# (\w+ = )", r"\1", example_toml(), flags=re.MULTILINE)
    assert len(tomllib.loads(text)) == len({s.section for s in SETTINGS})
    from_example = load(tmp_path, text)
    (tmp_path / "queen.toml").unlink()
    assert from_example == load(tmp_path)


def test_the_keeper_reads_keeper_toml_under_its_environment(tmp_path: Path) -> None:
    folder = tmp_path / "rbee"
    folder.mkdir()
    (folder / "keeper.toml").write_text('queen_url = "http://q:9000"\noutput = "json"\n')
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    settings = load_keeper_settings(env)
    assert (settings.queen_url, settings.output, settings.token_file) == (
        "http://q:9000",
        "json",
        None,
    )
    assert settings.sources == {"queen_url": "file", "output": "file"}
    settings = load_keeper_settings({**env, "RBEE_QUEEN_URL": "http://e:1"})
    assert settings.queen_url == "http://e:1"
    (folder / "keeper.toml").write_text('queen_ur = "x"\n')
    with pytest.raises(ConfigRejected, match="did you mean 'queen_url'"):
        load_keeper_settings(env)
    (folder / "keeper.toml").write_text('output = "yaml"\n')
    with pytest.raises(ConfigRejected, match="expected one of text, json"):
        load_keeper_settings(env)


def test_the_keeper_flag_beats_keeper_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "rbee").mkdir()
    (tmp_path / "rbee" / "keeper.toml").write_text('queen_url = "http://q:9000"\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("RBEE_QUEEN_URL", raising=False)
    monkeypatch.delenv("RBEE_OUTPUT", raising=False)
    assert build_parser().parse_args(["workers", "list"]).queen_url == "http://q:9000"
    args = build_parser().parse_args(["--queen-url", "http://f:1", "workers", "list"])
    assert args.queen_url == "http://f:1"
