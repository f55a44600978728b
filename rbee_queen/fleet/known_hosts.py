"""Host-key trust: the queen's own known_hosts under RBEE_HOME plus the user's.

A key is trusted only if one of those files lists it. An unknown key is refused
with its fingerprint unless the caller asked to accept new keys, in which case
it is recorded in the queen's file. A host whose listed key differs is always
refused: that is what a man-in-the-middle looks like.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import asyncssh


def user_known_hosts() -> Path:
    return Path.home() / ".ssh" / "known_hosts"


def host_pattern(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


@dataclass(frozen=True)
class HostKeyStore:
    queen_file: Path

    def files(self) -> list[str]:
        return [str(p) for p in (self.queen_file, user_known_hosts()) if p.is_file()]

    def load(self) -> asyncssh.SSHKnownHosts | None:
        files = self.files()
        if not files:
            return None
        return asyncssh.read_known_hosts(files)

    def has_entry(self, host: str, port: int) -> bool:
        known = self.load()
        if known is None:
            return False
        trusted, *_ = known.match(host, "", port)
        return bool(trusted)

    def replace(self, host: str, port: int, key: asyncssh.SSHKey) -> None:
        """Forget the queen's entries for host:port and record `key` (a changed key,
        accepted on purpose). The user's own known_hosts is never edited."""
        pattern = host_pattern(host, port)
        if self.queen_file.is_file():
            kept = [
                line
                for line in self.queen_file.read_text().splitlines(keepends=True)
                if line.split(" ", 1)[0] != pattern
            ]
            tmp = self.queen_file.with_name(f".{self.queen_file.name}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.writelines(kept)
            os.replace(tmp, self.queen_file)
        self.record(host, port, key)

    def record(self, host: str, port: int, key: asyncssh.SSHKey) -> None:
        line = f"{host_pattern(host, port)} {key.export_public_key('openssh').decode().strip()}\n"
        self.queen_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.queen_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as fh:
            fh.write(line)
