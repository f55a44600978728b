"""Private key files: refused when others can read them, as OpenSSH refuses them.

A key that group or others can read may already be someone else's key; using
it anyway would hide that. The fix is one command, so the error names it.
"""

from __future__ import annotations

import os
import stat

from rbee_queen.errors import InvalidSshKey, SshKeyInsecure


def check_private_key(path: str) -> None:
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return  # a missing key is reported where the key is read
    if mode & 0o077:
        raise SshKeyInsecure(
            f"private key {path} has mode {mode:04o}: others can read it; "
            f"fix it with `chmod 600 {path}`",
            path=path,
            mode=f"{mode:04o}",
        )


# What the first line of every private key format asyncssh reads begins with or holds.
_KEY_MARKERS = (b"PRIVATE KEY-----", b"PuTTY-User-Key-File-")


def check_is_private_key(path: str) -> None:
    """Refuse a file that is not a private key (a token file, a public key)
    before any connection: otherwise the failure would read as an unreachable
    node. Only the head is read; the key itself is parsed by asyncssh."""
    try:
        with open(path, "rb") as key:
            head = key.read(4096)
    except OSError:
        return  # a missing key is reported where the key is read
    if not any(marker in head.split(b"\n", 1)[0] for marker in _KEY_MARKERS):
        raise InvalidSshKey(
            "ssh_key_path is not a private key file (expected an OpenSSH, PEM or PuTTY key)",
            field="ssh_key_path",
        )
