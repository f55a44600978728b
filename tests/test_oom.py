"""A worker under a memory bound smaller than its model: the node's OOM killer
ends it while it loads, and the queen says WORKER_OOM once, from the memory
group's kernel counter, with its figures, and starts nothing again at that size.

Real queen, sshd, helper and tiny model; the bound is a cgroup the helper
creates below its own (v2 where delegated, v1 where writable, as for root).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from rbee_hive import cgroups
from tests.lifecycle_support import add_node, audit_entries, workers
from tests.plugins.procs import worker_pids
from tests.plugins.queen import start_queen, stop_queen
from tests.plugins.sshd import SshServer

# Enough for python and the worker's web server, not for torch and the model.
LIMIT_MIB = 120


def writable_memory_cgroup() -> str | None:
    """Why no memory group can be made here, or None when one can."""
    mounts = cgroups._mounts()
    for version in ("v2", "v1"):
        mount = mounts.get(version)
        if mount and cgroups._parent_dir(version, mount):
            return None
    return "no delegated cgroup v2 memory controller and no writable v1 memory hierarchy"


def test_worker_over_its_memory_bound_is_worker_oom_once(
    rbee_home: Path,
    sshd: SshServer,
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    why = writable_memory_cgroup()
    if why:
        pytest.skip(why)
    monkeypatch.setenv("RBEE_WORKER_MEMORY_LIMIT_MIB", str(LIMIT_MIB))
    monkeypatch.setenv("RBEE_SUPERVISOR_INTERVAL", "0.3")
    queen = start_queen(rbee_home)
    try:
        add_node(queen, sshd, tmp_path)
        task = {"node": "n1", "model": f"file:{tiny_model_dir}", "prompt": "hi", "max_tokens": 2}
        with queen.client() as c:
            r = c.post("/v2/tasks", json=task)
            error = r.json()["error"]
            assert r.status_code == 502 and error["code"] == "WORKER_OOM", r.text
            details = error["details"]
            assert details["limit_bytes"] == LIMIT_MIB * 1024**2
            assert details["peak_bytes"] and details["peak_bytes"] >= LIMIT_MIB * 1024**2 * 0.9
            assert details["next_limit_bytes"] == int(LIMIT_MIB * 1024**2 * 1.5)
            worker_id, phase = details["worker_id"], details["phase"]
            assert phase in ("starting", "loading")
            history = c.get(f"/v2/workers/{worker_id}/events").json()["events"]
            metrics = c.get("/metrics").text
        states = [e["to_state"] for e in history]
        assert "restarting" not in states and states[-1] == "stopped", states
        failed = [e["reason"] for e in history if e["to_state"] == "failed"]
        assert len(failed) == 1 and "OOM killer" in failed[0], failed
        assert any("memory bound cgroup_v" in e["reason"] for e in history), history
        oom_lines = [
            line for line in metrics.splitlines() if line.startswith("rbee_worker_ooms_total")
        ]
        assert f'rbee_worker_ooms_total{{phase="{phase}"}} 1.0' in oom_lines, oom_lines
        (entry,) = audit_entries(queen, "worker.oom", worker_id)
        assert entry["limit_bytes"] == LIMIT_MIB * 1024**2 and entry["phase"] == phase
        time.sleep(1.5)  # five supervisor rounds: nothing may start it again
        assert workers(queen) == []
        assert worker_pids(under=str(tmp_path)) == []
        leftover = [p for p in _groups_of(worker_id) if os.path.isdir(p)]
        assert leftover == [], leftover
    finally:
        stop_queen(queen)


def _groups_of(worker_id: str) -> list[str]:
    mounts = cgroups._mounts()
    found = []
    for version in ("v2", "v1"):
        mount = mounts.get(version)
        parent = cgroups._parent_dir(version, mount) if mount else None
        if parent:
            found.append(os.path.join(parent, cgroups.GROUP_PREFIX + worker_id))
    return found
