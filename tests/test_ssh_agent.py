"""Keys from the ssh-agent: a node added without a key file authenticates with
the keys a real `ssh-agent` holds for the queen."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.plugins.queen import start_queen, stop_queen
from tests.plugins.sshd import SshServer


@pytest.fixture
def agent(tmp_path: Path, sshd: SshServer) -> Iterator[str]:
    sock = str(tmp_path / "agent.sock")
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(sock):
            assert time.monotonic() < deadline, "ssh-agent did not start"
            time.sleep(0.05)
        env = {**os.environ, "SSH_AUTH_SOCK": sock}
        subprocess.run(["ssh-add", str(sshd.client_key)], env=env, check=True, capture_output=True)
        yield sock
    finally:
        proc.terminate()
        proc.wait(10)


def test_node_without_a_key_file_uses_the_agent(
    rbee_home: Path,
    sshd: SshServer,
    agent: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSH_AUTH_SOCK", agent)
    queen = start_queen(rbee_home)
    try:
        body = sshd.node_body("n1", tmp_path / "inst", accept_new_host_key=True)
        del body["ssh_key_path"]
        with queen.client() as c:
            r = c.post("/v2/registry/beehives/add", json=body)
        assert r.status_code == 201, r.text
        assert r.json()["node"]["ssh_key_path"] == ""
        assert {"name": "key", "detail": "ssh-agent"}.items() <= r.json()["preflight"][0].items()
    finally:
        stop_queen(queen)


def test_without_agent_or_key_the_error_says_so(
    rbee_home: Path, sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    queen = start_queen(rbee_home)
    try:
        body = sshd.node_body("n1", tmp_path / "inst", accept_new_host_key=True)
        del body["ssh_key_path"]
        with queen.client() as c:
            r = c.post("/v2/registry/beehives/add", json=body)
        assert r.status_code == 502
        assert r.json()["error"]["code"] == "SSH_AUTH_FAILED"
        assert "SSH_AUTH_SOCK" in r.json()["error"]["message"]
    finally:
        stop_queen(queen)
