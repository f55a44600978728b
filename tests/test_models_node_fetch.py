"""Downloads that run on the node (model source "hub"): the node's worker python
fetches from the hub itself, through the helper, with progress streamed back.

The node is the loopback sshd; the fake hub listens on loopback, so the node
reaches it as a real node would reach the hub (HF_ENDPOINT travels from the
queen to the node's download). Nothing may pass through the queen's cache.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.plugins.fakehub import FakeHub
from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.plugins.sshd import SshServer
from tests.test_models_hub import download, listed, sha

WEIGHTS = "model.safetensors"


def add_hub_node(queen: QueenProcess, sshd: SshServer, tmp_path: Path) -> None:
    body = sshd.node_body("n1", tmp_path / "install", accept_new_host_key=True)
    with queen.client() as c:
        r = c.post("/v2/registry/beehives/add", json={**body, "model_source": "hub"})
    assert r.status_code == 201, r.text
    assert r.json()["node"]["model_source"] == "hub"


def test_download_on_the_node_with_progress_resume_and_hash_check(
    hub_queen: QueenProcess, fakehub: FakeHub, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    size = (tiny_model_dir / WEIGHTS).stat().st_size
    fakehub.add_folder("Org/Tiny", tiny_model_dir)
    add_hub_node(hub_queen, sshd, tmp_path)
    store = tmp_path / "install" / "models"
    key = f"Org/Tiny/{WEIGHTS}"

    # Corrupted at the source: caught by its hash on the node, nothing recorded or kept.
    fakehub.corrupt.add(WEIGHTS)
    status, events = download(hub_queen, "n1", "hf:Org/Tiny")
    assert events[-1]["type"] == "error" and events[-1]["code"] == "DOWNLOAD_FAILED", events
    assert "hash check" in events[-1]["message"]
    assert listed(hub_queen) == [] and not (store / "hf" / "Org" / "Tiny").exists()
    assert not (store / ".partial" / "hf" / "Org" / "Tiny" / WEIGHTS).exists()
    fakehub.corrupt.clear()

    # Cut in the middle: the node keeps what arrived; the next run asks for the rest.
    fakehub.cut[WEIGHTS] = size // 2
    status, events = download(hub_queen, "n1", "hf:Org/Tiny")
    assert events[-1]["type"] == "error" and events[-1]["code"] == "DOWNLOAD_FAILED", events
    assert (store / ".partial" / "hf" / "Org" / "Tiny" / WEIGHTS).stat().st_size == size // 2
    fakehub.outage = False
    before = fakehub.served[key]
    status, events = download(hub_queen, "n1", "hf:Org/Tiny")
    assert events[-1]["type"] == "done", events
    assert {"type": "resume", "file": WEIGHTS, "bytes": size // 2} in events
    assert (key, size // 2) in fakehub.ranges
    assert fakehub.served[key] - before == size - size // 2
    progress = [e for e in events if e["type"] == "progress"]
    assert progress and progress[-1]["bytes_done"] == events[0]["bytes_total"]

    folder = store / "hf" / "Org" / "Tiny"
    expected = {p.name: sha(p) for p in tiny_model_dir.iterdir() if p.is_file()}
    assert {p.name: sha(p) for p in folder.iterdir()} == expected
    assert {f["name"]: f["sha256"] for f in events[-1]["model"]["files"]} == expected
    assert not (hub_queen.home / "hf-cache" / "Org").exists()  # never through the queen


def test_private_repo_token_reaches_the_node_but_no_file_or_log(
    rbee_home: Path,
    hub_queen: QueenProcess,
    fakehub: FakeHub,
    sshd: SshServer,
    tiny_model_dir: Path,
    tmp_path: Path,
) -> None:
    fakehub.add_folder("Org/Private", tiny_model_dir)
    secret = "hf_node_side_secret_0123"
    fakehub.private["Org/Private"] = secret
    token = tmp_path / "hf-token"
    token.write_text(secret + "\n")
    token.chmod(0o600)
    stop_queen(hub_queen)
    os.environ["RBEE_HF_TOKEN_FILE"] = str(token)
    try:
        queen = start_queen(rbee_home)
    finally:
        del os.environ["RBEE_HF_TOKEN_FILE"]
    try:
        add_hub_node(queen, sshd, tmp_path)
        status, events = download(queen, "n1", "hf:Org/Private")
        assert events[-1]["type"] == "done", events  # the node's GETs carried the token
        assert f"Org/Private/{WEIGHTS}" in fakehub.served
    finally:
        stop_queen(queen)
    for root in (tmp_path / "install", rbee_home):
        for path in root.rglob("*"):
            if path.is_file() and path != token:
                assert secret.encode() not in path.read_bytes(), path


def test_model_source_is_checked_and_can_be_changed(
    hub_queen: QueenProcess, sshd: SshServer, tmp_path: Path
) -> None:
    body = sshd.node_body("n1", tmp_path / "install", accept_new_host_key=True)
    with hub_queen.client() as c:
        bad = c.post("/v2/registry/beehives/add", json={**body, "model_source": "usb"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "INVALID_REQUEST"
        assert c.get("/v2/registry/beehives/list").json()["nodes"] == []  # nothing written
        added = c.post("/v2/registry/beehives/add", json=body)
        assert added.json()["node"]["model_source"] == "queen"  # the default
        changed = c.post(
            "/v2/registry/beehives/update", json={"node_name": "n1", "model_source": "hub"}
        )
        assert changed.status_code == 200, changed.text
        (node,) = c.get("/v2/registry/beehives/list").json()["nodes"]
    assert node["model_source"] == "hub"
