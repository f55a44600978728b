"""No empty SSH_MSG_IGNORE ahead of every packet the queen sends a node.

Once a link is encrypted, asyncssh sends an empty SSH_MSG_IGNORE before each
packet: RFC 4251's countermeasure (section 9.3.1) for CBC ciphers, where the
next packet's IV is the last cipher block an eavesdropper has already seen.
rbee negotiates no CBC cipher (session.py's ENCRYPTION_ALGS: AES-GCM,
ChaCha20-Poly1305, AES-CTR; OpenSSH sends no such packets for them either),
so there it protects nothing, and it doubled the packets on the path of every
request to a worker behind SSH: two encryptions and two sends in the queen,
two packets for sshd to decrypt (docs/benchmarks.md, "The queen's front").

Only the empty ones asyncssh adds are dropped, and only on a link whose
cipher is not CBC; every other packet goes through asyncssh as before.
"""

from __future__ import annotations

from typing import Any

import asyncssh
from asyncssh.constants import MSG_IGNORE
from asyncssh.packet import String

EMPTY = String(b"")


def without_empty_ignores(conn: asyncssh.SSHClientConnection) -> asyncssh.SSHClientConnection:
    """`conn`, sending no empty SSH_MSG_IGNORE where its cipher is not CBC."""
    cipher = str(conn.get_extra_info("send_cipher") or "")
    if not cipher or "cbc" in cipher:
        return conn
    send = conn.send_packet

    def send_packet(pkttype: int, *args: Any, **kwargs: Any) -> None:
        if pkttype == MSG_IGNORE and args == (EMPTY,):
            return
        send(pkttype, *args, **kwargs)

    conn.send_packet = send_packet  # type: ignore[method-assign]
    return conn
