"""`rbee-keeper models catalog`: the model names the queen routes, through HTTP."""

from __future__ import annotations

import json
from pathlib import Path

from tests.plugins.queen import QueenProcess
from tests.plugins.sshd import SshServer
from tests.test_infer_e2e import add_node
from tests.test_models_hub import keeper


def test_catalog_lists_names_refs_nodes_and_slots(
    queen: QueenProcess, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    empty = keeper(queen, "models", "catalog")
    assert empty.returncode == 0, empty.stderr
    assert "no models in the catalog" in empty.stderr

    add_node(queen, sshd, tmp_path)
    body = {"name": "tiny-1", "model_ref": f"file:{tiny_model_dir}", "nodes": ["n1"], "slots": 2}
    with queen.client() as c:
        assert c.post("/v2/registry/models/add", json=body).status_code == 201

    shown = keeper(queen, "models", "catalog")
    assert shown.returncode == 0, shown.stderr
    (row,) = [line.split() for line in shown.stdout.splitlines() if "tiny-1" in line]
    assert row == ["tiny-1", f"file:{tiny_model_dir}", "n1", "2", "cpu", "-"]  # no bound set
    as_json = json.loads(keeper(queen, "--json", "models", "catalog").stdout)
    assert [(m["name"], m["nodes"], m["slots"]) for m in as_json["models"]] == [
        ("tiny-1", ["n1"], 2)
    ]
