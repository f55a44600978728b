"""API keys: the queen's own token plus named keys, and who each one is.

The owner's token (the zero-config file under RBEE_HOME, a token file, a
systemd credential or, warned, the environment) is an admin key for every
model. Named keys live in `RBEE_HOME/keys.json` (0600) as SHA-256 digests
only, each with an admin right and an optional model allow-list; a copy of
that file gives nobody a usable token.

Lookups compare the digest of the presented token with every known digest
(`hmac.compare_digest`, no early exit), so timing says nothing about which
characters matched. A reload builds a new table and swaps it in one
assignment: requests already authenticated keep going.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets as random
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rbee_queen.errors import KeyAlreadyExists, KeyNotFound, SecretInvalid
from rbee_queen.secrets import (
    check_mode,
    create_secret_file,
    credential_path,
    digest,
    from_environment,
    load_secret_file,
)
from rbee_wire.error_text import shown

TOKEN_FILE_ENV = "RBEE_API_TOKEN_FILE"
TOKEN_ENV = "RBEE_API_TOKEN"
CREDENTIAL_NAME = "rbee-api-token"
OWNER = "owner"
MIN_NETWORK_TOKEN_CHARS = 16
MAX_KEYS_FILE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Principal:
    """Who a request comes from, once its token is known."""

    name: str
    admin: bool
    models: tuple[str, ...] | None = None  # None: every model

    def may_use(self, model_ref: str) -> bool:
        return self.models is None or model_ref in self.models


@dataclass(frozen=True)
class OwnerToken:
    value: str
    source: str  # where it came from, for the log: never the value


def owner_token(home: Path, token_file: Path | None, *, create: bool) -> OwnerToken | None:
    """The owner's token from the first source that has one, in documented order."""
    explicit = token_file or _env_path(TOKEN_FILE_ENV)
    if explicit is not None:
        return OwnerToken(load_secret_file(explicit), f"file {explicit}")
    credential = credential_path(CREDENTIAL_NAME)
    if credential is not None:
        return OwnerToken(load_secret_file(credential), f"systemd credential {CREDENTIAL_NAME}")
    from_env = from_environment(TOKEN_ENV)
    if from_env is not None:
        return OwnerToken(from_env, f"${TOKEN_ENV}")
    default = home / "api-token"
    if default.exists():
        return OwnerToken(load_secret_file(default), f"file {default}")
    if create:
        return OwnerToken(create_secret_file(default), f"file {default} (new)")
    return None


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


@dataclass(frozen=True)
class KeyEntry:
    name: str
    sha256: str
    admin: bool
    models: tuple[str, ...] | None
    created_at: str

    def public(self) -> dict[str, Any]:
        """What `keys list` shows: never the digest, which is all a file copy would hold."""
        return {
            "name": self.name,
            "admin": self.admin,
            "models": list(self.models) if self.models is not None else None,
            "created_at": self.created_at,
            "fingerprint": "token:" + self.sha256[:6],
        }


class KeysFile:
    """`keys.json`: named keys as digests. Written whole, atomically, mode 0600."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[KeyEntry]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return []
        with os.fdopen(fd, "rb") as fh:
            check_mode(self.path, os.fstat(fh.fileno()))
            raw = fh.read(MAX_KEYS_FILE_BYTES + 1)
        if len(raw) > MAX_KEYS_FILE_BYTES:
            raise SecretInvalid(f"keys file {self.path} is larger than 1 MiB")
        try:
            return [_entry(item) for item in json.loads(raw)["keys"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise SecretInvalid(f"keys file {self.path} is not valid: {exc}") from None

    def write(self, entries: list[KeyEntry]) -> None:
        data = {
            "keys": [
                {
                    "name": e.name,
                    "sha256": e.sha256,
                    "admin": e.admin,
                    "models": list(e.models) if e.models is not None else None,
                    "created_at": e.created_at,
                }
                for e in entries
            ]
        }
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1)
        os.replace(tmp, self.path)


def _entry(item: dict[str, Any]) -> KeyEntry:
    models = item.get("models")
    sha = str(item["sha256"])
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ValueError(f"key {shown(item.get('name'))} has no valid sha256")
    return KeyEntry(
        name=str(item["name"]),
        sha256=sha,
        admin=bool(item.get("admin", False)),
        models=tuple(str(m) for m in models) if models is not None else None,
        created_at=str(item.get("created_at", "")),
    )


class KeyRing:
    def __init__(self, home: Path, token_file: Path | None = None) -> None:
        self.home = home
        self.token_file = token_file
        self.file = KeysFile(home / "keys.json")
        self.owner: OwnerToken | None = None
        self._table: tuple[tuple[str, Principal], ...] = ()

    def load(self, *, create: bool = True) -> None:
        """(Re)read the owner's token and the keys file; on error the old table stays."""
        owner = owner_token(self.home, self.token_file, create=create)
        entries = self.file.read()
        table = [(digest(owner.value), Principal(OWNER, admin=True))] if owner else []
        table += [(e.sha256, Principal(e.name, e.admin, e.models)) for e in entries]
        self.owner, self._table = owner, tuple(table)

    def authenticate(self, token: str) -> Principal | None:
        presented = digest(token)
        found: Principal | None = None
        for known, principal in self._table:
            if hmac.compare_digest(known, presented) and found is None:
                found = principal
        return found

    def entries(self) -> list[KeyEntry]:
        return self.file.read()

    def add(self, name: str, *, admin: bool, models: list[str] | None) -> str:
        """Create a named key; returns its token, which is stored nowhere."""
        entries = self.file.read()
        if name == OWNER or any(e.name == name for e in entries):
            raise KeyAlreadyExists(f"a key named {shown(name)} already exists")
        token = random.token_urlsafe(32)
        created = datetime.now(UTC).isoformat(timespec="seconds")
        model_list = tuple(models) if models is not None else None
        entries.append(KeyEntry(name, digest(token), admin, model_list, created))
        self.file.write(entries)
        self.load(create=False)
        return token

    def revoke(self, name: str) -> None:
        entries = self.file.read()
        kept = [e for e in entries if e.name != name]
        if len(kept) == len(entries):
            raise KeyNotFound(f"no key named {shown(name)}")
        self.file.write(kept)
        self.load(create=False)
