"""A node whose sshd has no SFTP subsystem: the helper goes over stdin instead."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from rbee_queen.errors import HelperFailed
from rbee_queen.fleet.known_hosts import HostKeyStore
from rbee_queen.fleet.session import open_session
from tests.plugins.sshd import SshServer, variant


@pytest.fixture(scope="module")
def sshd_without_sftp(sshd: SshServer) -> Iterator[SshServer]:
    """The shared sshd's keys and settings, less its `Subsystem sftp` line."""
    with variant(sshd, "nosftp", lambda c: re.sub(r"(?m)^Subsystem sftp .*\n", "", c)) as server:
        yield server


async def test_the_helper_is_streamed_and_runs(
    sshd_without_sftp: SshServer, tmp_path: Path
) -> None:
    store = HostKeyStore(tmp_path / "known_hosts")
    session = await open_session(
        sshd_without_sftp.target(tmp_path / "inst"),
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
        sshd_without_sftp.target(tmp_path / "inst"), store, connect_timeout=10
    )
    try:
        assert again.helper_dir == session.helper_dir
    finally:
        await again.close()


async def test_a_failed_stream_names_both_ways_tried(
    sshd_without_sftp: SshServer, tmp_path: Path
) -> None:
    store = HostKeyStore(tmp_path / "known_hosts")
    node = sshd_without_sftp.target(tmp_path / "inst", python="/nonexistent/python3")
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
        sshd_without_sftp.target(install), store, connect_timeout=10, accept_new_host_key=True
    )
    await session.close()
    assert (install / "hive").is_dir()
    assert not list(Path.home().glob("PWNED*")) and not list(tmp_path.glob("PWNED*"))
