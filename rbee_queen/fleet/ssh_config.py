"""Host aliases from the user's OpenSSH client config (`~/.ssh/config`).

Only what rbee needs to reach a node: `HostName`, `Port`, `User` and
`IdentityFile`, from `Host` blocks matched the way OpenSSH matches them
(patterns with `*` and `?`, `!` to exclude, the first value found wins).
Other options (ProxyJump and friends) are not applied; a node that needs them
is reported as unreachable like any other.
"""

from __future__ import annotations

import fnmatch
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

WANTED = {"hostname", "port", "user", "identityfile"}


@dataclass(frozen=True)
class HostAlias:
    host: str
    port: int | None = None
    user: str | None = None
    identity_file: str | None = None


def user_ssh_config() -> Path:
    return Path.home() / ".ssh" / "config"


def resolve(alias: str, config: Path | None = None) -> HostAlias:
    """What `ssh alias` would connect to; the alias itself when nothing matches."""
    path = config or user_ssh_config()
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return HostAlias(alias)
    found: dict[str, str] = {}
    applies = True  # options before the first Host block apply to every host
    for line in lines:
        words = _words(line)
        if not words:
            continue
        key, values = words[0].lower(), words[1:]
        if key == "host":
            applies = _matches(alias, values)
        elif key == "match":
            applies = False  # Match blocks need more than rbee knows; skipped
        elif applies and key in WANTED and values and key not in found:
            found[key] = values[0]
    port = found.get("port")
    identity = found.get("identityfile")
    return HostAlias(
        host=found.get("hostname", alias).replace("%h", alias),
        port=int(port) if port and port.isdigit() else None,
        user=found.get("user"),
        identity_file=os.path.expanduser(identity) if identity else None,
    )


def _words(line: str) -> list[str]:
    line = line.strip()
    if not line or line.startswith("#"):
        return []
    if "=" in line.split(None, 1)[0]:  # `Key=value` form
        key, _, rest = line.partition("=")
        return [key.strip(), *shlex.split(rest, comments=True)]
    try:
        return shlex.split(line, comments=True)
    except ValueError:
        return []


def _matches(alias: str, patterns: list[str]) -> bool:
    matched = False
    for pattern in patterns:
        if pattern.startswith("!"):
            if fnmatch.fnmatchcase(alias, pattern[1:]):
                return False
        elif fnmatch.fnmatchcase(alias, pattern):
            matched = True
    return matched
