"""A ready worker the OOM killer ends while it serves: the queen reads its memory
group's counter, says WORKER_OOM (cause `oom`), and restarts it once under a
bound 1.5 times larger, never at the same size.

The OOM is a real one in the worker's own memory group: a second process joins
the group and fills it; the worker's oom_score_adj is 1000, so it is what the
OOM killer ends first. The filler leaves the moment the worker is gone (or a
second OOM, before the worker's memory is freed, ends it too), so the restart
finds the group empty.
"""

from __future__ import annotations

import json
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
# Joins the group (argv[1]) before it touches a byte, so all it holds is charged
# there, then grows 8 MiB at a time until the worker (argv[2]) is gone: the
# group's page cache is reclaimed first, so no size fixed in advance is sure to
# end the worker. Exits 3 if it holds the whole limit and the worker still runs.
FILLER = """
import os, sys
with open(os.path.join(sys.argv[1], "cgroup.procs"), "w") as fh:
    fh.write(str(os.getpid()))

def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

held, cap = [], int(sys.argv[3])
while alive(sys.argv[2]):
    if len(held) * 8 * 2**20 >= cap:
        sys.exit(3)
    chunk = bytearray(8 * 2**20)
    for i in range(0, len(chunk), 4096):
        chunk[i] = 1
    held.append(chunk)
"""


def gone(pid: int) -> bool:
    try:
        return "zombie" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True


def fill_group_until_the_worker_goes(group: str, worker_pid: int) -> None:
    Path(f"/proc/{worker_pid}/oom_score_adj").write_text("1000")
    filler = subprocess.Popen(
        [sys.executable, "-c", FILLER, group, str(worker_pid), str(LIMIT_MIB * MIB)],
    )
    try:
        code = filler.wait(60)
        # The filler may be ended too: a second OOM can come before the ended
        # worker's memory is freed, so the worker may still be on its way out.
        # What counts is that it goes.
        try:
            wait_for(lambda: gone(worker_pid), timeout=10)
        except AssertionError:
            raise AssertionError(f"the filler ended ({code}) and the worker ran on") from None
    finally:
        if filler.poll() is None:
            filler.kill()
            filler.wait()


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
