"""One node session: an asyncssh connection, the helper channel, port forwards.

This module is the boundary where asyncssh and OS errors become rbee errors.
No remote command is ever built from unquoted input: the commands run are the
helper start, assembled with `shlex.quote`/`shlex.join`, and, on a node without
SFTP, the fixed unpacking script of stream_upload.py (its input goes on stdin).
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncssh

from rbee_queen.errors import (
    ConnectionTimeout,
    HelperFailed,
    HostKeyChanged,
    HostKeyUnknown,
    NodeUnreachable,
    SshAuthFailed,
)
from rbee_queen.fleet.bundle import COMPLETE_MARKER, Bundle, local_bundle
from rbee_queen.fleet.helper_api import HelperApi
from rbee_queen.fleet.hive_client import HiveClient
from rbee_queen.fleet.key_files import check_private_key
from rbee_queen.fleet.known_hosts import HostKeyStore
from rbee_queen.fleet.ssh_ignore import without_empty_ignores
from rbee_queen.fleet.stream_upload import stream_bundle

# A link that goes dead mid-stream sends nothing, not even a reset: the node is
# given up on after KEEPALIVE_COUNT_MAX keepalives in a row go unanswered, so
# within about 6 to 8 s; the connection closes, and with it every forward and
# the streams through them.
KEEPALIVE_INTERVAL_S = 2.0
KEEPALIVE_COUNT_MAX = 3

# AES-GCM first: OpenSSL runs it on the CPU's AES instructions in one call per
# packet, where asyncssh's chacha20-poly1305 (its default first choice) takes
# several cryptography calls per packet. Measured on a warm health round over
# 16 nodes, the queen's CPU per round halves (see docs/benchmarks.md). All of
# these are OpenSSH's own defaults; a node that offers only chacha still works.
# No CBC: ssh_ignore.py relies on it.
ENCRYPTION_ALGS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
)


@dataclass(frozen=True)
class NodeTarget:
    """Everything needed to reach a node; built from a store row or a request."""

    name: str
    host: str
    port: int
    user: str
    key_path: str
    install_path: str
    helper_python: str = "python3"


class NodeSession:
    def __init__(self, target: NodeTarget, conn: asyncssh.SSHClientConnection) -> None:
        self.target = target
        self.conn = conn
        self.install_dir = ""  # absolute install path on the node, set by start_helper
        self.helper_dir = ""
        self.hive: HiveClient | None = None
        self._process: asyncssh.SSHClientProcess[str] | None = None
        self._forwards: dict[int, asyncssh.SSHListener] = {}
        # The helper's ops as typed methods (`session.ops.probe(...)`).
        self.ops = HelperApi(self.call)

    @property
    def run_dir(self) -> str:
        return posixpath.join(self.install_dir, "run")

    @property
    def alive(self) -> bool:
        return self.hive is not None and not self.hive.closed and not self.conn.is_closed()

    async def call(self, op: str, timeout: float = 30.0, **args: Any) -> Any:
        """One op by name; `ops` has the same calls typed, and is preferred."""
        if self.hive is None:
            raise HelperFailed(f"helper on {self.target.name} is not running")
        return await self.hive.call(op, timeout=timeout, **args)

    async def start_helper(self, bundle: Bundle | None = None) -> None:
        bundle = bundle or local_bundle()
        if await self._start_uploaded_helper(bundle):
            return
        await self._upload_helper(bundle)
        self._process = await self.conn.create_process(
            f"cd {shlex.quote(self.helper_dir)} && exec {self._helper_command()}",
            encoding="utf-8",
        )
        self.hive = HiveClient(self.target.name, self._process.stdout, self._process.stdin)
        try:
            await self.ops.ping(timeout=15.0)
        except Exception as exc:
            stderr = await _drain(self._process.stderr)
            raise HelperFailed(
                f"helper did not start on {self.target.name}: {stderr or exc}"
            ) from exc

    async def _upload_helper(self, bundle: Bundle) -> None:
        """By SFTP; where the node's sshd offers none, streamed into its python."""
        try:
            async with self.conn.start_sftp_client() as sftp:
                self.install_dir = await _resolve_remote_path(sftp, self.target.install_path)
                self.helper_dir = posixpath.join(self.install_dir, "hive", bundle.digest)
                await _upload_bundle(sftp, self.helper_dir, bundle)
                return
        except asyncssh.ChannelOpenError as exc:
            sftp_refused = exc.reason
        python = self.target.helper_python
        try:
            where = await stream_bundle(self.conn, python, self.target.install_path, bundle)
        except (HelperFailed, asyncssh.Error) as exc:
            reason = exc.message if isinstance(exc, HelperFailed) else exc.reason
            if isinstance(exc, HelperFailed) and exc.details.get("check") == "install_path":
                place = f"{self.target.install_path} on {self.target.name}"
                raise HelperFailed(f"cannot write under {place}: {reason}", **exc.details) from exc
            raise HelperFailed(
                f"cannot upload the helper to {self.target.name}: tried SFTP ({sftp_refused}), "
                f"then a stream through {python} on stdin ({reason}); try: enable sshd's "
                f"sftp subsystem, or check that {python} (3.10+) runs there"
            ) from exc
        self.install_dir, self.helper_dir = where

    async def _start_uploaded_helper(self, bundle: Bundle) -> bool:
        """Start the helper straight away when this bundle is already complete on
        the node, which is every connect but the first: no SFTP session (and no
        sftp-server process) on the way. False, with nothing left running, when it
        is not there or does not answer; the caller then takes the upload path."""
        base = _login_relative(self.target.install_path)
        if base is None:
            return False
        helper_dir = posixpath.join(base, "hive", bundle.digest)
        marker = posixpath.join(helper_dir, COMPLETE_MARKER)
        process = await self.conn.create_process(
            f"test -f {shlex.quote(marker)} && cd {shlex.quote(helper_dir)} && "
            f"exec {self._helper_command()}",
            encoding="utf-8",
        )
        hive = HiveClient(self.target.name, process.stdout, process.stdin)
        try:
            pong = await HelperApi(hive.call).ping(timeout=15.0)
            where = pong["cwd"]  # the helper's absolute folder: install/hive/<digest>
        except Exception:  # noqa: BLE001 - not uploaded yet, or an older helper
            await hive.aclose()
            process.close()
            return False
        self._process, self.hive = process, hive
        self.helper_dir = where
        self.install_dir = posixpath.dirname(posixpath.dirname(where))
        return True

    def _helper_command(self) -> str:
        # -S -E: the helper needs only the standard library, so skip site-packages
        # (a good part of its start on a node with many packages) and PYTHON*
        # variables that could put other modules in its way.
        return shlex.join([self.target.helper_python, "-S", "-E", "-u", "-m", "rbee_hive"])

    async def upload(self, remote_path: str, content: bytes) -> bool:
        """Put `content` at `remote_path` (content-addressed by the caller) unless it
        is already there; written under a temporary name and renamed, so a cut-off
        upload is never taken for a whole file. Returns whether it uploaded."""
        part = f"{remote_path}.part"
        try:
            async with self.conn.start_sftp_client() as sftp:
                if await sftp.exists(remote_path):
                    return False
                await sftp.makedirs(posixpath.dirname(remote_path), exist_ok=True)
                async with sftp.open(part, "wb") as fh:
                    await fh.write(content)
                await sftp.posix_rename(part, remote_path)
        except asyncssh.SFTPError as exc:
            raise HelperFailed(
                f"cannot write {remote_path} on {self.target.name}: {exc.reason}"
            ) from exc
        except asyncssh.Error as exc:
            raise NodeUnreachable(f"upload to {self.target.name} failed: {exc.reason}") from exc
        return True

    async def forward(self, remote_port: int) -> int:
        """Local port that reaches 127.0.0.1:remote_port on the node."""
        listener = self._forwards.get(remote_port)
        if listener is None:
            listener = await self.conn.forward_local_port("127.0.0.1", 0, "127.0.0.1", remote_port)
            self._forwards[remote_port] = listener
        return listener.get_port()

    async def open_channel(self, remote_port: int, factory: Callable[[], Any]) -> Any:
        """A direct-tcpip channel to 127.0.0.1:remote_port on the node, its data
        handed to the session `factory` makes (no local socket in between).
        asyncssh's refusals come out as ConnectionError, like a socket's."""
        try:
            _, session = await self.conn.create_connection(factory, "127.0.0.1", remote_port)
        except asyncssh.Error as exc:
            raise ConnectionError(f"no channel to port {remote_port}: {exc.reason}") from exc
        return session

    def close_forward(self, remote_port: int) -> None:
        listener = self._forwards.pop(remote_port, None)
        if listener is not None:
            listener.close()

    async def close(self) -> None:
        for port in list(self._forwards):
            self.close_forward(port)
        if self.hive is not None:
            await self.hive.aclose()
        if self._process is not None:
            self._process.stdin.write_eof()
        self.conn.close()
        try:
            await asyncio.wait_for(self.conn.wait_closed(), 5.0)
        except TimeoutError:
            pass


async def _drain(reader: asyncssh.SSHReader[str]) -> str:
    try:
        text = await asyncio.wait_for(reader.read(4096), 1.0)
    except (TimeoutError, asyncssh.Error):
        return ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _login_relative(path: str) -> str | None:
    """`path` as the node's login shell (started in the home folder) can use it
    without tilde expansion; None for forms like `~other/x`."""
    if path == "~":
        return "."
    if path.startswith("~/"):
        return path[2:] or "."
    return None if path.startswith("~") else path


async def _resolve_remote_path(sftp: asyncssh.SFTPClient, path: str) -> str:
    # SFTP paths are relative to the login directory, which is how "~" is meant.
    if path == "~":
        path = "."
    elif path.startswith("~/"):
        path = path[2:]
    await sftp.makedirs(path, exist_ok=True)
    return await sftp.realpath(path)


async def _upload_bundle(sftp: asyncssh.SFTPClient, helper_dir: str, bundle: Bundle) -> None:
    marker = posixpath.join(helper_dir, COMPLETE_MARKER)
    if await sftp.exists(marker):
        return
    for rel, content in bundle.files:
        dest = posixpath.join(helper_dir, rel)
        await sftp.makedirs(posixpath.dirname(dest), exist_ok=True)
        async with sftp.open(dest, "wb") as fh:
            await fh.write(content)
    async with sftp.open(marker, "w") as fh:
        await fh.write(bundle.digest + "\n")


async def open_session(
    target: NodeTarget,
    host_keys: HostKeyStore,
    *,
    connect_timeout: float,
    accept_new_host_key: bool = False,
) -> NodeSession:
    """Connect, verify the host key, upload and start the helper."""
    conn = await _connect(target, host_keys, connect_timeout, accept_new_host_key)
    session = NodeSession(target, conn)
    try:
        await asyncio.wait_for(session.start_helper(), connect_timeout + 30.0)
    except TimeoutError:
        await session.close()
        raise ConnectionTimeout(f"helper start on {target.name} timed out") from None
    except asyncssh.SFTPError as exc:
        await session.close()
        raise HelperFailed(
            f"cannot write under {target.install_path} on {target.name}: {exc.reason}",
            check="install_path",
        ) from exc
    except asyncssh.Error as exc:
        await session.close()
        raise HelperFailed(f"helper start on {target.name} failed: {exc.reason}") from exc
    except BaseException:
        await session.close()
        raise
    return session


async def _connect(
    target: NodeTarget, host_keys: HostKeyStore, timeout: float, accept_new: bool
) -> asyncssh.SSHClientConnection:
    where = f"{target.user}@{target.host}:{target.port}"
    if target.key_path:
        check_private_key(target.key_path)
    # A key file named for the node, and nothing else; without one, the queen's
    # ssh-agent (SSH_AUTH_SOCK) and only it.
    keys: dict[str, Any] = (
        {"client_keys": [target.key_path], "agent_path": None}
        if target.key_path
        else {"client_keys": []}
    )
    known = host_keys.load()
    if known is None or not host_keys.has_entry(target.host, target.port):
        key = await _fetch_host_key(target, timeout, where)
        if not accept_new:
            raise HostKeyUnknown(
                f"unknown host key for {where} ({key.get_fingerprint()}); "
                "verify it and retry with --accept-new-host-key",
                fingerprint=key.get_fingerprint(),
            )
        host_keys.record(target.host, target.port, key)
        known = host_keys.load()
    try:
        conn = await asyncssh.connect(
            target.host,
            target.port,
            username=target.user,
            known_hosts=known,
            **keys,
            config=[],
            encryption_algs=list(ENCRYPTION_ALGS),
            connect_timeout=timeout,
            keepalive_interval=KEEPALIVE_INTERVAL_S,
            keepalive_count_max=KEEPALIVE_COUNT_MAX,
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        raise HostKeyChanged(
            f"host key for {where} CHANGED: it does not match the recorded one, which is what "
            "a man-in-the-middle looks like; refusing to connect. If the node was reinstalled, "
            f"verify the new key and run `rbee-keeper setup update-node --name {target.name} "
            "--accept-new-host-key`"
        ) from exc
    except asyncssh.PermissionDenied as exc:
        how = f"key {target.key_path}" if target.key_path else "the ssh-agent's keys"
        hint = (
            ""
            if target.key_path or os.environ.get("SSH_AUTH_SOCK")
            else " (no ssh-agent: SSH_AUTH_SOCK is not set for the queen)"
        )
        raise SshAuthFailed(f"SSH authentication with {how} refused by {where}{hint}") from exc
    except (asyncssh.KeyImportError, OSError) as exc:
        raise _network_error(exc, where) from exc
    except TimeoutError as exc:
        raise ConnectionTimeout(f"no SSH answer from {where} within {timeout:g}s") from exc
    except asyncssh.Error as exc:
        raise NodeUnreachable(f"SSH to {where} failed: {exc.reason}") from exc
    return without_empty_ignores(conn)


async def accept_changed_host_key(
    target: NodeTarget, host_keys: HostKeyStore, timeout: float
) -> str:
    """Replace the queen's recorded key for the node with the one it offers now;
    the user asked for it after verifying the new key. Returns its fingerprint."""
    where = f"{target.user}@{target.host}:{target.port}"
    key = await _fetch_host_key(target, timeout, where)
    host_keys.replace(target.host, target.port, key)
    return str(key.get_fingerprint())


async def _fetch_host_key(target: NodeTarget, timeout: float, where: str) -> asyncssh.SSHKey:
    try:
        key = await asyncio.wait_for(
            asyncssh.get_server_host_key(target.host, target.port, config=[]), timeout
        )
    except TimeoutError as exc:
        raise ConnectionTimeout(f"no SSH answer from {where} within {timeout:g}s") from exc
    except OSError as exc:
        raise _network_error(exc, where) from exc
    except asyncssh.Error as exc:
        raise NodeUnreachable(f"SSH to {where} failed: {exc.reason}") from exc
    if key is None:
        raise NodeUnreachable(f"{where} offered no host key")
    return key


def _network_error(exc: Exception, where: str) -> NodeUnreachable:
    if isinstance(exc, asyncssh.KeyImportError):
        return NodeUnreachable(f"cannot read the SSH key for {where}: {exc}")
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return NodeUnreachable(f"cannot reach {where}: {reason}")
