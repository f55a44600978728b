"""SSH edges: loose private keys refused, changed host keys refused loudly."""

from __future__ import annotations

import shutil
from pathlib import Path

import asyncssh

from rbee_queen.fleet.known_hosts import HostKeyStore
from tests.plugins.queen import QueenProcess
from tests.plugins.sshd import SshServer


def test_a_group_readable_private_key_is_refused_with_chmod_600(
    queen: QueenProcess, sshd: SshServer, tmp_path: Path
) -> None:
    key = tmp_path / "id_loose"
    shutil.copy(sshd.client_key, key)
    key.chmod(0o644)
    body = {
        **sshd.node_body("n1", tmp_path / "i", accept_new_host_key=True),
        "ssh_key_path": str(key),
    }
    with queen.client() as c:
        r = c.post("/v2/registry/beehives/add", json=body)
        assert r.status_code == 400
        error = r.json()["error"]
        assert error["code"] == "SSH_KEY_INSECURE"
        assert f"chmod 600 {key}" in error["message"]
        assert c.get("/v2/registry/beehives/list").json()["nodes"] == []
    assert "PRIVATE KEY" not in r.text


def test_a_changed_host_key_names_the_way_to_accept_it(
    queen: QueenProcess, sshd: SshServer, tmp_path: Path
) -> None:
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHX1NqnxQHf0zJqxc3t5BC4YKv1ZnDSnm2Yb0r2ZkDsE"
    (queen.home / "known_hosts").write_text(f"[127.0.0.1]:{sshd.port} {other}\n")
    body = sshd.node_body("n1", tmp_path / "i", accept_new_host_key=True)
    with queen.client() as c:
        r = c.post("/v2/registry/beehives/add", json=body)
    error = r.json()["error"]
    assert (r.status_code, error["code"]) == (502, "HOST_KEY_CHANGED")
    assert "update-node --name n1 --accept-new-host-key" in error["message"]
    # --accept-new-host-key on add never overrides a changed key.
    assert (queen.home / "known_hosts").read_text() == f"[127.0.0.1]:{sshd.port} {other}\n"


def test_replace_swaps_one_hosts_entry_and_keeps_the_others(tmp_path: Path) -> None:
    store = HostKeyStore(tmp_path / "known_hosts")
    old = asyncssh.generate_private_key("ssh-ed25519")
    new = asyncssh.generate_private_key("ssh-ed25519")
    keep = asyncssh.generate_private_key("ssh-ed25519")
    store.record("10.0.0.1", 2222, old)
    store.record("10.0.0.2", 22, keep)
    store.replace("10.0.0.1", 2222, new)
    text = store.queen_file.read_text()
    assert old.export_public_key().decode().split()[1] not in text
    assert new.export_public_key().decode().split()[1] in text
    assert keep.export_public_key().decode().split()[1] in text
    assert store.queen_file.stat().st_mode & 0o777 == 0o600


def test_update_node_accepts_a_changed_host_key(
    queen: QueenProcess, sshd: SshServer, tmp_path: Path
) -> None:
    body = sshd.node_body("n1", tmp_path / "inst", accept_new_host_key=True)
    with queen.client() as c:
        assert c.post("/v2/registry/beehives/add", json=body).status_code == 201
    # The node is "reinstalled": the queen's record now names another key.
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHX1NqnxQHf0zJqxc3t5BC4YKv1ZnDSnm2Yb0r2ZkDsE"
    (queen.home / "known_hosts").write_text(f"[127.0.0.1]:{sshd.port} {other}\n")
    with queen.client() as c:
        refused = c.post("/v2/registry/beehives/update", json={"node_name": "n1"})
        assert refused.status_code == 502
        assert refused.json()["error"]["code"] == "HOST_KEY_CHANGED"
        accepted = c.post(
            "/v2/registry/beehives/update",
            json={"node_name": "n1", "accept_new_host_key": True},
        )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["accepted_host_key"].startswith("SHA256:")
    assert accepted.json()["node"]["status"] == "reachable"
    known = (queen.home / "known_hosts").read_text()
    assert other.split()[1] not in known
    assert sshd.host_public_key.split()[1] in known
