"""A node whose sshd has no SFTP subsystem: the helper goes over stdin instead."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from rbee_queen.errors import HelperFailed
from rbee_queen.fleet.known_hosts import HostKeyStore
from rbee_queen.fleet.session import NodeTarget, open_session
from tests.plugins.sshd import SSHD, SshServer, _wait_listening, free_port


@pytest.fixture(scope="module")
def sshd_without_sftp(sshd: SshServer) -> Iterator[SshServer]:
    """The shared sshd's keys and settings, less its `Subsystem sftp` line."""
    port = free_port()
    config = (sshd.root / "sshd_config").read_text()
    config = re.sub(r"(?m)^Port \d+$", f"Port {port}", config)
    config = re.sub(r"(?m)^Subsystem sftp .*\n", "", config)
    path = sshd.root / "sshd_config_nosftp"
    path.write_text(config)
    with open(sshd.root / "sshd-nosftp.log", "wb") as log:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(path)], stderr=log)
    try:
        _wait_listening(proc, port, sshd.root)
        yield SshServer(**{**sshd.__dict__, "port": port})
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def target(server: SshServer, install: Path, python: str = "python3") -> NodeTarget:
    return NodeTarget(
        name="n1",
        host=server.host,
        port=server.port,
        user=server.user,
        key_path=str(server.client_key),
        install_path=str(install),
        helper_python=python,
    )


async def test_the_helper_is_streamed_and_runs(
    sshd_without_sftp: SshServer, tmp_path: Path
) -> None:
    store = HostKeyStore(tmp_path / "known_hosts")
    session = await open_session(
        target(sshd_without_sftp, tmp_path / "inst"),
        store,
        connect_timeout=10,
        accept_new_host_key=True,
    )
    try:
        pong = await session.ops.ping()
        assert session.install_dir == str((tmp_path / "inst").resolve())
        assert pong["cwd"] == session.helper_dir
        assert (Path(session.helper_dir) / ".complete").is_file()
        assert (Path(session.helper_dir) / "rbee_hive" / "__main__.py").is_file()
    finally:
        await session.close()
    # The next connect finds the complete folder and starts it without an upload.
    again = await open_session(
        target(sshd_without_sftp, tmp_path / "inst"), store, connect_timeout=10
    )
    try:
        assert again.helper_dir == session.helper_dir
    finally:
        await again.close()


async def test_a_failed_stream_names_both_ways_tried(
    sshd_without_sftp: SshServer, tmp_path: Path
) -> None:
    store = HostKeyStore(tmp_path / "known_hosts")
    node = target(sshd_without_sftp, tmp_path / "inst", python="/nonexistent/python3")
    with pytest.raises(HelperFailed) as failure:
        await open_session(node, store, connect_timeout=10, accept_new_host_key=True)
    message = failure.value.message
    assert message.startswith("cannot upload the helper to n1: tried SFTP (")
    assert "then a stream through /nonexistent/python3 on stdin (" in message
    assert "No such file or directory" in message
    assert not (tmp_path / "inst").exists()


async def test_an_install_path_with_shell_characters_stays_a_path(
    sshd_without_sftp: SshServer, tmp_path: Path
) -> None:
    install = tmp_path / "a b;touch PWNED$(id)"
    store = HostKeyStore(tmp_path / "known_hosts")
    session = await open_session(
        target(sshd_without_sftp, install), store, connect_timeout=10, accept_new_host_key=True
    )
    await session.close()
    assert (install / "hive").is_dir()
    assert not list(Path.home().glob("PWNED*")) and not list(tmp_path.glob("PWNED*"))
