"""The node inventory over real HTTP against a real sshd."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from tests.plugins.queen import QueenProcess
from tests.plugins.sshd import SshServer, free_port


def add(queen: QueenProcess, body: dict[str, object]) -> tuple[int, dict]:
    with queen.client() as c:
        r = c.post("/v2/registry/beehives/add", json=body)
    return r.status_code, r.json()


def node_names(queen: QueenProcess) -> list[str]:
    with queen.client() as c:
        return [n["node_name"] for n in c.get("/v2/registry/beehives/list").json()["nodes"]]


def test_add_list_remove(queen: QueenProcess, sshd: SshServer, tmp_path: Path) -> None:
    status, body = add(queen, sshd.node_body("n1", tmp_path / "inst", accept_new_host_key=True))
    assert status == 201, body
    node = body["node"]
    assert node["status"] == "reachable"
    assert node["backends"] == ["cpu"]
    assert node["devices"]["cpu"] == 1
    assert node["last_connected"]
    # The helper really was uploaded into a content-addressed folder, marked complete.
    markers = list((tmp_path / "inst" / "hive").glob("*/.complete"))
    assert len(markers) == 1
    assert (markers[0].parent / "rbee_hive" / "rpc.py").is_file()
    # The host key was recorded in the queen's own known_hosts.
    known = (queen.home / "known_hosts").read_text()
    assert sshd.host_public_key.split()[1] in known
    assert f"[127.0.0.1]:{sshd.port}" in known
    assert node_names(queen) == ["n1"]
    with queen.client() as c:
        r = c.post("/v2/registry/beehives/remove", json={"node_name": "n1"})
    assert r.status_code == 200 and r.json()["removed"] == "n1"
    assert node_names(queen) == []


def test_unknown_host_key_is_refused_with_fingerprint(
    queen: QueenProcess, sshd: SshServer, tmp_path: Path
) -> None:
    status, body = add(queen, sshd.node_body("n1", tmp_path / "inst"))
    assert status == 502
    assert body["error"]["code"] == "HOST_KEY_UNKNOWN"
    assert body["error"]["details"]["fingerprint"].startswith("SHA256:")
    assert node_names(queen) == []
    assert not (queen.home / "known_hosts").exists()


def test_changed_host_key_is_refused(queen: QueenProcess, sshd: SshServer, tmp_path: Path) -> None:
    # Record a different key for this host:port, as if the host had been replaced.
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHX1NqnxQHf0zJqxc3t5BC4YKv1ZnDSnm2Yb0r2ZkDsE"
    (queen.home / "known_hosts").write_text(f"[127.0.0.1]:{sshd.port} {other}\n")
    status, body = add(queen, sshd.node_body("n1", tmp_path / "i", accept_new_host_key=True))
    assert status == 502
    assert body["error"]["code"] == "HOST_KEY_CHANGED"
    assert node_names(queen) == []


def test_duplicate_name(queen: QueenProcess, sshd: SshServer, tmp_path: Path) -> None:
    body = sshd.node_body("n1", tmp_path / "inst", accept_new_host_key=True)
    assert add(queen, body)[0] == 201
    status, err = add(queen, body)
    assert status == 409
    assert err["error"]["code"] == "NODE_ALREADY_EXISTS"
    assert "remove-node" in err["error"]["message"]


def test_missing_key_file(queen: QueenProcess, sshd: SshServer, tmp_path: Path) -> None:
    body = sshd.node_body("n1", tmp_path / "inst", accept_new_host_key=True)
    body["ssh_key_path"] = str(tmp_path / "nope")
    status, err = add(queen, body)
    assert status == 400
    assert err["error"]["code"] == "SSH_KEY_NOT_FOUND"
    assert node_names(queen) == []


def test_auth_refused(queen: QueenProcess, sshd: SshServer, tmp_path: Path) -> None:
    import subprocess

    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    body = sshd.node_body("n1", tmp_path / "inst", accept_new_host_key=True)
    body["ssh_key_path"] = str(stranger)
    status, err = add(queen, body)
    assert status == 502
    assert err["error"]["code"] == "SSH_AUTH_FAILED"
    assert node_names(queen) == []


def test_refused_port_is_unreachable(queen: QueenProcess, sshd: SshServer, tmp_path: Path) -> None:
    body = sshd.node_body("n1", tmp_path / "inst", accept_new_host_key=True)
    body["ssh_port"] = free_port()
    status, err = add(queen, body)
    assert status == 502
    assert err["error"]["code"] == "NODE_UNREACHABLE"
    assert node_names(queen) == []


def test_silent_host_times_out(
    rbee_home: Path, sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.plugins.queen import start_queen, stop_queen

    # A listener that accepts and never speaks SSH: a hung host, on loopback.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(silent.accept()[0]), daemon=True).start()
    monkeypatch.setenv("RBEE_SSH_CONNECT_TIMEOUT", "1.5")
    queen = start_queen(rbee_home)
    try:
        body = sshd.node_body("n1", tmp_path / "inst", accept_new_host_key=True)
        body["ssh_port"] = silent.getsockname()[1]
        started = time.monotonic()
        status, err = add(queen, body)
        elapsed = time.monotonic() - started
        assert status == 504
        assert err["error"]["code"] == "CONNECTION_TIMEOUT"
        assert elapsed < 10
        assert node_names(queen) == []
    finally:
        stop_queen(queen)
        for conn in held:
            conn.close()
        silent.close()


def test_validation_lists_every_bad_field(queen: QueenProcess) -> None:
    status, err = add(
        queen,
        {"node_name": "bad name;rm", "ssh_host": "h$(x)", "ssh_port": 70000, "ssh_user": ""},
    )
    assert status == 400
    assert err["error"]["code"] == "INVALID_REQUEST"
    fields = {f["field"] for f in err["error"]["details"]["fields"]}
    # No ssh_key_path is fine: the queen then uses its ssh-agent.
    assert fields == {"node_name", "ssh_host", "ssh_port", "ssh_user"}


def test_remove_unknown_node(queen: QueenProcess) -> None:
    with queen.client() as c:
        r = c.post("/v2/registry/beehives/remove", json={"node_name": "ghost"})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "NODE_NOT_FOUND"
