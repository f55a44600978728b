"""Memory bounds through a real queen, sshd, helper and tiny model: a node's
setting bounds its workers; the node's OOM killer ends one under it; the bound
it raised outlives a queen restart (the next start, by the new queen, runs
under it); a catalog model's setting wins over the node's and the raised bound
is only a floor. Bad settings are a coded 400 and change nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rbee_keeper.cli import main
from tests.lifecycle_support import all_workers
from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.plugins.sshd import SshServer
from tests.test_oom import writable_memory_cgroup

MIB = 1024**2
NODE_MIB = 120  # python and the worker's server fit, torch and the model do not
MODEL_MIB = 1024  # the tiny model loads well within it


def task(queen: QueenProcess, model: str, **where: Any) -> Any:
    with queen.client() as c:
        return c.post("/v2/tasks", json={"model": model, "prompt": "hi", "max_tokens": 2, **where})


def oom_details(queen: QueenProcess, model_dir: Path) -> dict[str, Any]:
    r = task(queen, f"file:{model_dir}", node="n1")
    assert r.status_code == 502 and r.json()["error"]["code"] == "WORKER_OOM", r.text
    details: dict[str, Any] = r.json()["error"]["details"]
    return details


def bad_settings_are_refused(queen: QueenProcess, sshd: SshServer, home: Path) -> None:
    with queen.client() as c:
        body = sshd.node_body("n2", home / "n2", accept_new_host_key=True)
        r = c.post("/v2/registry/beehives/add", json={**body, "worker_memory_limit_mib": -2})
        assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_REQUEST"
        assert r.json()["error"]["details"]["fields"][0]["field"] == "worker_memory_limit_mib"
        update = {"node_name": "n1", "worker_memory_limit_mib": "lots"}
        r = c.post("/v2/registry/beehives/update", json=update)
        assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_REQUEST"
        entry = {"name": "x", "model_ref": "file:/m", "nodes": ["n1"], "memory_limit_mib": 2**40}
        r = c.post("/v2/registry/models/add", json=entry)
        assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_REQUEST"
        nodes = c.get("/v2/registry/beehives/list").json()["nodes"]
        assert [(n["node_name"], n["worker_memory_limit_mib"]) for n in nodes] == [("n1", NODE_MIB)]
        assert c.get("/v2/registry/models/list").json()["models"] == []


def test_a_raised_bound_outlives_a_queen_restart_and_the_model_setting_wins(
    rbee_home: Path,
    sshd: SshServer,
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    why = writable_memory_cgroup()
    if why:
        pytest.skip(why)
    monkeypatch.setenv("RBEE_WORKER_MEMORY_LIMIT_MIB", "4096")  # the node's setting beats it
    queen = start_queen(rbee_home)
    try:
        body = sshd.node_body("n1", rbee_home / "n1", accept_new_host_key=True)
        queen.add_node({**body, "worker_memory_limit_mib": NODE_MIB})
        bad_settings_are_refused(queen, sshd, rbee_home)
        first = oom_details(queen, tiny_model_dir)
        assert first["limit_bytes"] == NODE_MIB * MIB
        assert first["next_limit_bytes"] == int(NODE_MIB * MIB * 1.5)
    finally:
        stop_queen(queen)
    queen = start_queen(rbee_home)  # the same database, a new process
    try:
        second = oom_details(queen, tiny_model_dir)
        assert second["limit_bytes"] == first["next_limit_bytes"], second  # not NODE_MIB again
        (row,) = [w for w in all_workers(queen) if w["worker_id"] == second["worker_id"]]
        assert (row["memory_limit_bytes"], row["memory_limit_source"]) == (
            first["next_limit_bytes"],
            "oom",
        )
        with queen.client() as c:
            history = c.get(f"/v2/workers/{row['worker_id']}/events").json()["events"]
        raised_mib = first["next_limit_bytes"] // MIB
        assert f"memory bound {raised_mib} MiB (raised after an OOM kill)" in history[0]["reason"]
        entry = {"name": "tiny", "model_ref": f"file:{tiny_model_dir}", "nodes": ["n1"]}
        with queen.client() as c:
            added = c.post("/v2/registry/models/add", json={**entry, "memory_limit_mib": MODEL_MIB})
            assert added.json()["model"]["memory_limit_mib"] == MODEL_MIB, added.text
        assert task(queen, "tiny").status_code == 200
        served_by_model_setting(queen, rbee_home)
        monkeypatch.setenv("RBEE_HOME", str(queen.home))  # the keeper's token
        monkeypatch.setenv("COLUMNS", "200")
        assert main(["workers", "list", "--queen-url", queen.url]) == 0
        assert f"{MODEL_MIB} MiB (model)" in capsys.readouterr().out
    finally:
        stop_queen(queen)


def served_by_model_setting(queen: QueenProcess, home: Path) -> None:
    """The model's 1024 MiB beat the node's 120 and the raised 270: on the row and
    in the helper's record of the process."""
    (worker,) = [w for w in all_workers(queen) if w["state"] in ("idle", "busy")]
    assert (worker["memory_limit_bytes"], worker["memory_limit_source"]) == (
        MODEL_MIB * MIB,
        "model",
    )
    record = json.loads((home / "n1" / "run" / f"{worker['worker_id']}.pid").read_text())
    assert record["memory"]["limit_bytes"] == MODEL_MIB * MIB, record
