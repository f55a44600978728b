"""The helper's upload for nodes without SFTP: a stream into the node's python3.

Hardened sshd configurations often drop the SFTP subsystem. The bundle then goes
over the exec channel's stdin to a fixed unpacking script run by the node's
python (`python3 -S -E -c SCRIPT`): the command line holds no input at all; the
install path and the files travel on stdin, so nothing is ever parsed by a shell.
The unpacking follows the SFTP upload's rules: the content-addressed folder,
the `.complete` marker written last, an existing complete folder left as it is.
"""

from __future__ import annotations

import json
import shlex

import asyncssh

from rbee_queen.errors import HelperFailed
from rbee_queen.fleet.bundle import COMPLETE_MARKER, Bundle

# The unpacking's exit status when the install path cannot be written (its
# reason on stderr), told apart from a python that fails in any other way.
UNWRITABLE_EXIT = 3

# Runs on the node with the standard library only; reads everything first, so
# the sender never writes into a closed pipe.
UNPACK_SCRIPT = f"""
import json, os, sys
src = sys.stdin.buffer
head = json.loads(src.readline())
files = [(rel, src.read(size)) for rel, size in head["files"]]
base = os.path.expanduser(head["install_path"])
helper = os.path.join(base, "hive", head["digest"])
marker = os.path.join(helper, {COMPLETE_MARKER!r})
try:
    if not os.path.exists(marker):
        for rel, content in files:
            dest = os.path.join(helper, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "wb") as fh:
                fh.write(content)
        with open(marker, "w") as fh:
            fh.write(head["digest"] + "\\n")
except OSError as exc:
    sys.stderr.write((exc.strerror or str(exc)) + "\\n")
    sys.exit({UNWRITABLE_EXIT})
print(json.dumps({{"install_dir": os.path.realpath(base), "helper_dir": os.path.realpath(helper)}}))
"""


def stream_payload(install_path: str, bundle: Bundle) -> bytes:
    header = {
        "install_path": install_path,
        "digest": bundle.digest,
        "files": [[rel, len(content)] for rel, content in bundle.files],
    }
    return json.dumps(header).encode() + b"\n" + b"".join(c for _, c in bundle.files)


async def stream_bundle(
    conn: asyncssh.SSHClientConnection, python: str, install_path: str, bundle: Bundle
) -> tuple[str, str]:
    """Unpack the bundle on the node; returns (install dir, helper dir), both absolute.

    Raises HelperFailed with the node's own last line of stderr when it fails,
    with `check` "install_path" when the install path cannot be written.
    """
    command = shlex.join([python, "-S", "-E", "-c", UNPACK_SCRIPT])
    result = await conn.run(
        command, input=stream_payload(install_path, bundle), encoding=None, timeout=60
    )
    if result.exit_status != 0:
        stderr = _text(result.stderr).strip().splitlines()
        unwritable = {"check": "install_path"} if result.exit_status == UNWRITABLE_EXIT else {}
        raise HelperFailed(
            stderr[-1] if stderr else f"exit status {result.exit_status}", **unwritable
        )
    answer = json.loads(_text(result.stdout))
    return str(answer["install_dir"]), str(answer["helper_dir"])


def _text(output: bytes | str | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""
