"""Secrets from files, systemd credentials or (warned) the environment.

A secret file must be readable by its owner alone: a token others can read is
a token others have. Its content is one line: a trailing newline is trimmed;
empty, whitespace-only or multi-line content is refused, because a secret
pasted with stray lines is more often a mistake than a secret. Nothing here
ever puts a secret's value in a message; a token is named by its fingerprint.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import stat
from pathlib import Path

from rbee_queen.errors import SecretInvalid

log = logging.getLogger("rbee.secrets")

MAX_SECRET_BYTES = 1024 * 1024
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"


def fingerprint(token: str) -> str:
    """How logs name a token: the first 6 hex digits of its SHA-256."""
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:6]


def digest(token: str) -> str:
    """What key files store instead of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def load_secret_file(path: Path) -> str:
    """The one-line secret in `path`, after the mode, size and content checks."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise SecretInvalid(f"secret file {path} does not exist") from None
    except OSError as exc:
        raise SecretInvalid(f"cannot open secret file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        # fstat on the opened file: the checks apply to what is read, not to
        # whatever the path points at a moment later.
        info = os.fstat(fh.fileno())
        check_mode(path, info)
        if info.st_size > MAX_SECRET_BYTES:
            raise SecretInvalid(f"secret file {path} is larger than 1 MiB")
        raw = fh.read(MAX_SECRET_BYTES + 1)
    if len(raw) > MAX_SECRET_BYTES:
        raise SecretInvalid(f"secret file {path} is larger than 1 MiB")
    return parse_secret(raw, str(path))


def check_mode(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise SecretInvalid(f"secret file {path} is not a regular file")
    if info.st_mode & 0o077:
        mode = stat.S_IMODE(info.st_mode)
        raise SecretInvalid(
            f"secret file {path} has mode {mode:04o}: group and others must have no access "
            f"(chmod 600 {path})"
        )


def parse_secret(raw: bytes, where: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretInvalid(f"secret in {where} is not UTF-8") from None
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text.strip():
        raise SecretInvalid(f"secret in {where} is empty")
    if "\n" in text or "\r" in text:
        raise SecretInvalid(f"secret in {where} has more than one line")
    if text != text.strip():
        raise SecretInvalid(f"secret in {where} has leading or trailing whitespace")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        raise SecretInvalid(f"secret in {where} has control characters")
    return text


def credential_path(name: str) -> Path | None:
    """`$CREDENTIALS_DIRECTORY/<name>` when systemd passed that credential."""
    directory = os.environ.get(CREDENTIALS_ENV)
    if not directory:
        return None
    path = Path(directory) / name
    return path if path.exists() else None


def from_environment(name: str) -> str | None:
    """A documented fallback only: other processes of the user can read it (ps e)."""
    value = os.environ.get(name)
    if value is None:
        return None
    log.warning(
        "secret taken from $%s; prefer a 0600 file or a systemd credential "
        "(the environment is visible to other processes of this user)",
        name,
    )
    return parse_secret(value.encode(), f"${name}")


def create_secret_file(path: Path) -> str:
    """Write a new random token to `path` (0600) unless one is there; return the file's token.

    The file is written under a temporary name and linked into place, so a
    reader never sees it half-written and two writers end with one token.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # someone else's token won: use theirs
    finally:
        tmp.unlink(missing_ok=True)
    return load_secret_file(path)


def write_secret_file(path: Path, token: str) -> None:
    """Write `token` to a new 0600 file; refuses to replace an existing one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
