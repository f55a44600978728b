"""A ready worker the OOM killer ends while it serves: the queen reads its memory
group's counter, says WORKER_OOM (cause `oom`), and restarts it once under a
bound 1.5 times larger, never at the same size.

The OOM is a real one in the worker's own memory group: a second process joins
the group and fills it; the worker's oom_score_adj is 1000, so it is what the
OOM killer ends. The filler leaves the
moment the worker is gone, so the restart finds the group empty.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lifecycle_support import add_node, run_task, wait_for, workers
from tests.plugins.queen import start_queen, stop_queen
from tests.plugins.sshd import SshServer
from tests.test_oom import writable_memory_cgroup

LIMIT_MIB = 700
MIB = 1024 * 1024
# Fills the group to past its limit, then waits for the worker (argv[2]) to go.
FILLER = """
import os, sys, time
held = bytearray(int(sys.argv[1]))
for i in range(0, len(held), 4096):
    held[i] = 1
while os.path.exists(f"/proc/{sys.argv[2]}"):
    time.sleep(0.005)
"""


def fill_group_until_the_worker_goes(group: str, worker_pid: int) -> None:
    usage_file = "memory.current" if os.path.exists(f"{group}/memory.current") else None
    usage = int(Path(group, usage_file or "memory.usage_in_bytes").read_text())
    Path(f"/proc/{worker_pid}/oom_score_adj").write_text("1000")
    need = LIMIT_MIB * MIB - usage + 64 * MIB  # past the limit, yet alone under it
    assert need < LIMIT_MIB * MIB, usage
    filler = subprocess.Popen(
        [sys.executable, "-c", FILLER, str(need), str(worker_pid)],
    )
    Path(group, "cgroup.procs").write_text(str(filler.pid))
    filler.wait(60)


def test_a_serving_worker_ended_by_the_oom_killer_restarts_once_with_more(
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
    monkeypatch.setenv("RBEE_RESTART_BASE_DELAY", "0.2")
    queen = start_queen(rbee_home)
    try:
        add_node(queen, sshd, tmp_path)
        assert run_task(queen, tiny_model_dir, max_tokens=2)[-1]["type"] == "end"
        (worker,) = workers(queen)
        record = json.loads(
            Path(tmp_path, "install", "run", f"{worker['worker_id']}.pid").read_text()
        )
        assert record["memory"]["limit_bytes"] == LIMIT_MIB * MIB, record
        fill_group_until_the_worker_goes(record["memory"]["group"], worker["pid"])
        again = wait_for(
            lambda: [
                w for w in workers(queen) if w["state"] == "idle" and w["pid"] != worker["pid"]
            ],
            timeout=90,
        )
        assert again[0]["worker_id"] == worker["worker_id"]  # a restart keeps the id
        with queen.client() as c:
            events = c.get(f"/v2/workers/{worker['worker_id']}/events").json()["events"]
            metrics = c.get("/metrics").text
        reasons = [e["reason"] for e in events]
        assert sum("OOM killer while serving" in r for r in reasons) == 1, reasons
        assert sum(e["to_state"] == "restarting" for e in events) == 1, reasons
        assert any(
            f"cgroup_v1: {LIMIT_MIB * 3 // 2} MiB" in r
            or f"cgroup_v2: {LIMIT_MIB * 3 // 2} MiB" in r
            for r in reasons
        ), reasons
        assert 'rbee_worker_restarts_total{cause="oom"} 1.0' in metrics
        assert 'rbee_worker_ooms_total{phase="serving"} 1.0' in metrics
    finally:
        stop_queen(queen)
