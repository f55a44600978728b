"""A real OpenSSH sshd on a loopback port, with keys generated into a temp dir.

One sshd serves the whole test session (starting one costs ~50 ms but its
keys and config are shared). Each test still gets its own RBEE_HOME, so the
queen's known_hosts starts empty and tests decide whether to accept the key.
"""

from __future__ import annotations

import contextlib
import getpass
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

from rbee_queen.fleet.session import NodeTarget

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@dataclass(frozen=True)
class SshServer:
    host: str
    port: int
    user: str
    client_key: Path
    host_public_key: str
    root: Path

    def node_body(self, name: str, install_path: Path, **extra: object) -> dict[str, object]:
        """A /v2/registry/beehives/add body for this server."""
        import sys

        return {
            "node_name": name,
            "ssh_host": self.host,
            "ssh_port": self.port,
            "ssh_user": self.user,
            "ssh_key_path": str(self.client_key),
            "install_path": str(install_path),
            "worker_python": sys.executable,
            **extra,
        }

    async def connect(self, encryption_algs: list[str]) -> asyncssh.SSHClientConnection:
        """A plain asyncssh connection to this server, its host key verified."""
        host_key = asyncssh.import_public_key(self.host_public_key)
        return await asyncssh.connect(
            self.host,
            self.port,
            username=self.user,
            client_keys=[str(self.client_key)],
            known_hosts=([host_key], [], []),
            encryption_algs=encryption_algs,
            config=[],
        )

    def target(self, install_path: Path, python: str = "python3") -> NodeTarget:
        """A node `n1` on this server, installed under `install_path`."""
        return NodeTarget(
            name="n1",
            host=self.host,
            port=self.port,
            user=self.user,
            key_path=str(self.client_key),
            install_path=str(install_path),
            helper_python=python,
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        capture_output=True,
    )


def start_sshd(
    root: Path, *, detached: bool = False, session_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], SshServer]:
    """A loopback sshd under root; `session_env` is set in every session it opens
    (sshd's SetEnv), e.g. a PATH that puts a stand-in `nvidia-smi` first."""
    root.mkdir(parents=True, exist_ok=True)
    # sshd insists on its privilege-separation dir, which a fresh container lacks.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    host_key = root / "ssh_host_ed25519_key"
    client_key = root / "id_ed25519"
    _keygen(host_key)
    _keygen(client_key)
    authorized = root / "authorized_keys"
    authorized.write_text((root / "id_ed25519.pub").read_text())
    authorized.chmod(0o600)
    port = free_port()
    config = _write_config(root, port, host_key, authorized, session_env)
    with open(root / "sshd.log", "wb") as log:
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=log,
            # Only the demo's sshd outlives the script that started it; a test's
            # stays in the test run's session and goes with it.
            start_new_session=detached,
        )
    _wait_listening(proc, port, root)
    server = SshServer(
        host="127.0.0.1",
        port=port,
        user=getpass.getuser(),
        client_key=client_key,
        host_public_key=(root / "ssh_host_ed25519_key.pub").read_text().strip(),
        root=root,
    )
    return proc, server


def _write_config(
    root: Path, port: int, host_key: Path, authorized: Path, session_env: dict[str, str] | None
) -> Path:
    config = root / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"AuthorizedKeysFile {authorized}",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "PermitRootLogin prohibit-password",
                "UsePAM no",
                "StrictModes no",
                "PidFile none",
                "AllowTcpForwarding local",
                "Subsystem sftp internal-sftp",
                "LogLevel ERROR",
                *[f"SetEnv {k}={v}" for k, v in (session_env or {}).items()],
                "",
            ]
        )
    )
    return config


def _wait_listening(proc: subprocess.Popen[bytes], port: int, root: Path) -> None:
    """Until sshd accepts connections on its port (10 s at most); its log if it exits."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {(root / 'sshd.log').read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)


@contextlib.contextmanager
def variant(server: SshServer, name: str, edit: Callable[[str], str]) -> Iterator[SshServer]:
    """A second sshd with `server`'s keys and its config as `edit` returns it,
    on a port of its own, for as long as the block runs."""
    port = free_port()
    config = re.sub(r"(?m)^Port \d+$", f"Port {port}", (server.root / "sshd_config").read_text())
    path = server.root / f"sshd_config_{name}"
    path.write_text(edit(config))
    with open(server.root / f"sshd-{name}.log", "wb") as log:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(path)], stderr=log)
    try:
        _wait_listening(proc, port, server.root)
        yield SshServer(**{**server.__dict__, "port": port})
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    if not Path(SSHD).exists():
        pytest.fail("OpenSSH sshd is not installed (apt-get install openssh-server)")
    proc, server = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def serve_in_background(root: Path) -> SshServer:
    """Start (or find running) a detached loopback sshd under root; used by scripts/demo."""
    import json
    import os

    info_file = root / "server.json"
    if info_file.exists():
        info = json.loads(info_file.read_text())
        try:
            os.kill(info["pid"], 0)
            socket.create_connection(("127.0.0.1", info["port"]), timeout=1).close()
            return SshServer(
                **{**info["server"], "client_key": Path(info["server"]["client_key"]), "root": root}
            )
        except OSError:
            pass
    for stale in root.glob("*"):
        stale.unlink() if stale.is_file() else None
    proc, server = start_sshd(root, detached=True)
    record = {
        "pid": proc.pid,
        "port": server.port,
        "server": {**server.__dict__, "client_key": str(server.client_key), "root": ""},
    }
    info_file.write_text(json.dumps(record))
    return server


if __name__ == "__main__":
    import json
    import sys

    srv = serve_in_background(Path(sys.argv[1]))
    print(json.dumps({"port": srv.port, "user": srv.user, "key": str(srv.client_key)}))
