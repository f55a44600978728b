"""`setup export` writes what `setup import` reads: exported from one queen and
imported into an empty one, nodes, their settings and the catalog come back
exactly (real queens, a real sshd, the keeper as a process)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.plugins.sshd import SshServer

SETTINGS: tuple[str, ...] = ("ssh_host", "ssh_port", "ssh_user", "ssh_key_path", "install_path")
SETTINGS += ("worker_python", "worker_access", "model_source", "worker_memory_limit_mib")
MODEL_FIELDS = ("name", "model_ref", "nodes", "slots", "device", "memory_limit_mib")


def keeper(queen: QueenProcess, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rbee_keeper", "--queen-url", queen.url, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RBEE_HOME": str(queen.home)},  # that queen's token
    )


def inventory(queen: QueenProcess) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    with queen.client() as c:
        nodes = c.get("/v2/registry/beehives/list").json()["nodes"]
        models = c.get("/v2/registry/models/list").json()["models"]
    settings = [{k: n[k] for k in SETTINGS} | {"name": n["node_name"]} for n in nodes]
    entries = [{k: m[k] for k in MODEL_FIELDS} for m in models]
    by_name = lambda row: row["name"]  # noqa: E731
    return sorted(settings, key=by_name), sorted(entries, key=by_name)


def fill(queen: QueenProcess, sshd: SshServer, tmp_path: Path) -> None:
    queen.add_node(sshd.node_body("n1", tmp_path / "i1", accept_new_host_key=True))
    body = sshd.node_body("n2", tmp_path / "i2", model_source="hub", accept_new_host_key=True)
    queen.add_node({**body, "worker_memory_limit_mib": 2048})
    with queen.client() as c:
        for name, nodes, slots in (("tiny-1.0", ["n2", "n1"], 2), ("other", ["n1"], 1)):
            entry = {"name": name, "model_ref": "hf:Org/Tiny", "nodes": nodes, "slots": slots}
            entry["memory_limit_mib"] = slots * 512  # 0 (unset) for none: the node's applies
            assert c.post("/v2/registry/models/add", json=entry).status_code == 201


def test_export_then_import_into_an_empty_queen_round_trips(
    queen: QueenProcess, sshd: SshServer, tmp_path: Path
) -> None:
    fill(queen, sshd, tmp_path)
    exported = tmp_path / "fleet.toml"
    run = keeper(queen, "setup", "export", str(exported))
    assert run.returncode == 0, run.stderr
    text = exported.read_text()
    assert "token" not in text.lower() and "PRIVATE KEY" not in text
    assert set(tomllib.loads(text)) == {"nodes", "models"}
    empty_home = tmp_path / "empty-home"
    empty_home.mkdir()
    second = start_queen(empty_home)
    try:
        run = keeper(second, "setup", "import", "--accept-new-host-key", str(exported))
        assert run.returncode == 0, run.stdout + run.stderr
        assert inventory(second) == inventory(queen)
        again = tmp_path / "again.toml"
        assert keeper(second, "setup", "export", str(again)).returncode == 0
        assert again.read_text() == text
        run = keeper(second, "setup", "import", str(exported))  # twice: nothing changes
        assert run.returncode == 0 and "exists   model tiny-1.0" in run.stdout
    finally:
        stop_queen(second)
