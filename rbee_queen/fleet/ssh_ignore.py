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
`send_packet` is asyncssh's internal method: should a later asyncssh rename
it, links work as asyncssh makes them and tests/test_ssh_ignore.py fails.
"""

from __future__ import annotations

from typing import Any

import asyncssh

MSG_IGNORE = 2  # RFC 4253, section 11.2
EMPTY = b"\x00\x00\x00\x00"  # an SSH string of no bytes: its length, 0


def without_empty_ignores(conn: asyncssh.SSHClientConnection) -> asyncssh.SSHClientConnection:
    """`conn`, sending no empty SSH_MSG_IGNORE where its cipher is not CBC."""
    cipher = str(conn.get_extra_info("send_cipher") or "")
    send = getattr(conn, "send_packet", None)  # asyncssh's own, not public API
    if not cipher or "cbc" in cipher or send is None:
        return conn  # an asyncssh without it: sent as asyncssh sends (the tests say so)

    def send_packet(pkttype: int, *args: Any, **kwargs: Any) -> None:
        if pkttype == MSG_IGNORE and args == (EMPTY,):
            return
        send(pkttype, *args, **kwargs)

    conn.send_packet = send_packet  # type: ignore[method-assign]
    return conn
