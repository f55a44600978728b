"""Read the queen's settings: command-line flag, then environment, then
`queen.toml`, then the schema's default; check every value and report every
problem at once.

A loader of our own on `tomllib` and the schema's dataclasses, not
pydantic-settings: the schema must also carry what pydantic has no place for
(reloadable or not, the flag, the doc line), the messages must name the TOML
path, the value and its source in one line each, and the keeper and tests
import nothing more than the standard library for it.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rbee_queen.config_schema import BY_PATH, SECTIONS, SETTINGS, Setting
from rbee_queen.database_url import PostgresUrl, is_database_url, redact_password
from rbee_queen.errors import SecretInvalid
from rbee_queen.secrets import check_mode
from rbee_wire.error_text import shown

CONFIG_ENV = "RBEE_CONFIG"
FILE_NAME = "queen.toml"
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


class ConfigInvalid(Exception):
    """Every problem with the settings, one per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class ConfigOrigin:
    """Which file was read (if any), the flags given, and each value's source."""

    file: Path
    explicit: bool  # named by --config or RBEE_CONFIG: it must exist
    flags: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)

    @classmethod
    def locate(
        cls, home: Path, named: Path | None, env: Mapping[str, str], flags: dict[str, Any]
    ) -> ConfigOrigin:
        chosen = named or (Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else None)
        return cls(chosen or home / FILE_NAME, chosen is not None, flags)

    def again(self) -> ConfigOrigin:
        """The same file and flags, for a reload."""
        return ConfigOrigin(self.file, self.explicit, dict(self.flags))


def resolve(origin: ConfigOrigin, env: Mapping[str, str]) -> dict[str, Any]:
    """QueenConfig field -> value; fills origin.sources; raises ConfigInvalid."""
    problems: list[str] = []
    table = read_file(origin, problems)
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw, source = pick(setting, origin.flags, env, table)
        origin.sources[setting.path] = source
        try:
            values[setting.field] = convert(setting, raw, source, origin.file.parent)
        except ValueError as exc:
            value = shown(redact_password(raw), quote=isinstance(raw, str))
            problems.append(f"{setting.path} = {value} (from {source}): {exc}")
    problems += cross_checks(values, origin.sources)
    if problems:
        raise ConfigInvalid(problems)
    return values


def read_file(origin: ConfigOrigin, problems: list[str]) -> dict[str, dict[str, Any]]:
    """The file's tables, with unknown sections and keys reported."""
    try:
        with open(origin.file, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        if origin.explicit:
            problems.append(f"{origin.file}: no such file")
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        problems.append(f"{origin.file}: not readable TOML: {exc}")
        return {}
    tables: dict[str, dict[str, Any]] = {}
    for section, body in data.items():
        if section not in SECTIONS or not isinstance(body, dict):
            name = shown(section, quote=False)
            problems.append(f"{origin.file}: unknown section [{name}]{hint(section, SECTIONS)}")
            continue
        known = [s.key for s in SETTINGS if s.section == section]
        for key in body:
            if key not in known:
                name = shown(key, quote=False)
                problems.append(f"{origin.file}: unknown key {section}.{name}{hint(key, known)}")
        tables[section] = {k: v for k, v in body.items() if k in known}
    return tables


def hint(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def pick(
    setting: Setting, flags: Mapping[str, Any], env: Mapping[str, str], table: Mapping[str, Any]
) -> tuple[Any, str]:
    if flags.get(setting.path) is not None:
        return flags[setting.path], "flag"
    if setting.env and env.get(setting.env):
        return env[setting.env], f"environment {setting.env}"
    section = table.get(setting.section, {})
    if setting.key in section:
        return section[setting.key], "file"
    return setting.default, "default"


def convert(setting: Setting, raw: Any, source: str, base: Path) -> Any:
    """The value in its type, checked against the schema; ValueError says what is allowed."""
    if raw is None:
        return None
    text_source = isinstance(raw, str) and source.startswith("environment")
    if setting.url_ok and is_database_url(raw):
        return PostgresUrl.parse(raw)
    if setting.is_path:
        if not isinstance(raw, (str, Path)):
            raise ValueError(f"expected {setting.allowed()}")
        if str(raw) == "":
            return None
        path = Path(raw).expanduser()
        return path if path.is_absolute() or source != "file" else base / path
    if setting.kind is bool:
        return as_bool(raw, text_source, setting)
    if setting.kind is str:
        if not isinstance(raw, str) or (setting.choices and raw.lower() not in setting.choices):
            raise ValueError(f"expected {setting.allowed()}")
        return raw.lower() if setting.choices else raw
    return as_number(setting, raw, text_source)


def as_bool(raw: Any, text_source: bool, setting: Setting) -> bool:
    if isinstance(raw, bool):
        return raw
    if text_source and raw.lower() in TRUE_WORDS | FALSE_WORDS:
        return raw.lower() in TRUE_WORDS
    raise ValueError(f"expected {setting.allowed()}")


def as_number(setting: Setting, raw: Any, text_source: bool) -> int | float:
    value: int | float
    try:
        if isinstance(raw, bool):
            raise ValueError
        if setting.kind is int:
            value = int(raw) if text_source or isinstance(raw, int) else _no_int(raw)
        else:
            value = float(raw) if text_source or isinstance(raw, (int, float)) else _no_int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"expected {setting.allowed()}") from None
    low, high = setting.minimum, setting.maximum
    if value != value or (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"expected {setting.allowed()}")
    return value


def _no_int(raw: Any) -> int:
    raise ValueError(raw)


def cross_checks(values: Mapping[str, Any], sources: Mapping[str, str]) -> list[str]:
    """What no single value shows: a low port, a secret file others may read."""
    problems = []
    port = values.get("port")
    if isinstance(port, int) and port < 1024 and not values.get("allow_low_port"):
        problems.append(
            f"server.port = {port} (from {sources['server.port']}): below 1024;"
            " set server.allow_low_port = true to allow it"
        )
    ttl, renew = values.get("lease_ttl_s"), values.get("lease_renew_s")
    if isinstance(ttl, float) and isinstance(renew, float) and renew * 2 > ttl:
        problems.append(
            f"queens.lease_renew_s = {renew:g}: more than half of queens.lease_ttl_s"
            f" ({ttl:g}); a lease would lapse between two renewals"
        )
    for setting in SETTINGS:
        path = values.get(setting.field)
        if setting.secret_file and isinstance(path, Path) and path.exists():
            try:
                check_mode(path, os.stat(path))
            except SecretInvalid as exc:
                problems.append(f"{setting.path} = {shown(path)}: [{exc.code}] {exc.message}")
    return problems


def setting_of(path: str) -> Setting:
    return BY_PATH[path]
