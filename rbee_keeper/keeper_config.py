"""The keeper's own settings: `keeper.toml` in the user's config folder (XDG).

Precedence as the queen's: a flag, then the environment, then the file, then
the default. Keys: `queen_url`, `token_file`, `output` (`text` or `json`).
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rbee_queen.errors import ConfigRejected
from rbee_wire.error_text import shown

QUEEN_URL_ENV = "RBEE_QUEEN_URL"
TOKEN_FILE_ENV = "RBEE_API_TOKEN_FILE"
OUTPUT_ENV = "RBEE_OUTPUT"
DEFAULT_QUEEN_URL = "http://127.0.0.1:8080"
OUTPUTS = ("text", "json")
KEYS = {"queen_url": QUEEN_URL_ENV, "token_file": TOKEN_FILE_ENV, "output": OUTPUT_ENV}


@dataclass(frozen=True)
class KeeperSettings:
    queen_url: str = DEFAULT_QUEEN_URL
    token_file: str | None = None
    output: str = "text"
    sources: dict[str, str] = field(default_factory=dict)


def keeper_file(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or "~") / ".config")
    return Path(base).expanduser() / "rbee" / "keeper.toml"


def load_keeper_settings(env: Mapping[str, str] | None = None) -> KeeperSettings:
    """The environment over the file over the defaults (flags are argparse's);
    ConfigRejected names every problem."""
    env = os.environ if env is None else env
    path = keeper_file(env)
    table = read_table(path)
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    for key, env_name in KEYS.items():
        if env.get(env_name):
            values[key], sources[key] = env[env_name], f"environment {env_name}"
        elif key in table:
            values[key], sources[key] = table[key], "file"
    problems = [f"{path}: {p}" for p in check(values)]
    if problems:
        raise ConfigRejected("; ".join(problems), problems=problems)
    return KeeperSettings(**values, sources=sources)  # type: ignore[arg-type]


def read_table(path: Path) -> dict[str, object]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigRejected(f"{path}: not readable TOML: {exc}") from None
    unknown = [k for k in data if k not in KEYS]
    if unknown:
        problems = [f"{path}: unknown key {shown(k)}{hint(k)}" for k in unknown]
        raise ConfigRejected("; ".join(problems), problems=problems)
    return data


def hint(word: str) -> str:
    close = difflib.get_close_matches(word, list(KEYS), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check(values: Mapping[str, object]) -> list[str]:
    problems = []
    for key, value in values.items():
        if not isinstance(value, str) or not value:
            problems.append(f"{key} = {shown(value)}: expected text")
    url = values.get("queen_url")
    if isinstance(url, str) and not url.startswith(("http://", "https://")):
        problems.append(f"queen_url = {shown(url)}: expected an http(s) URL")
    if values.get("output") not in (None, *OUTPUTS):
        problems.append(f"output = {shown(values['output'])}: expected one of {', '.join(OUTPUTS)}")
    return problems
