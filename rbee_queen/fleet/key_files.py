"""Private key files: refused when others can read them, as OpenSSH refuses them.

A key that group or others can read may already be someone else's key; using
it anyway would hide that. The fix is one command, so the error names it.
"""

from __future__ import annotations

import os
import stat

from rbee_queen.errors import SshKeyInsecure


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
