"""A stream already running when the node's OOM killer ends its worker: the
client's stream ends with WORKER_OOM and the memory figures (the memory
group's counter, read after the stream broke), not WORKER_DIED.

A real OOM in the worker's own memory group, as in test_oom_serving: the worker
is frozen mid-stream, a filler process joins its group and fills it, and the
worker (oom_score_adj 1000) is what the OOM killer ends.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.lifecycle_support import add_node, run_task, workers
from tests.plugins.queen import start_queen, stop_queen
from tests.plugins.sshd import SshServer
from tests.pressure_support import LONG
from tests.test_oom import writable_memory_cgroup
from tests.test_oom_serving import LIMIT_MIB, MIB, fill_group_until_the_worker_goes


def test_a_stream_whose_worker_the_oom_killer_ends_is_worker_oom(
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
    queen = start_queen(rbee_home)
    try:
        add_node(queen, sshd, tmp_path)
        assert run_task(queen, tiny_model_dir, max_tokens=2)[-1]["type"] == "end"
        (worker,) = workers(queen)
        record = json.loads(
            Path(tmp_path, "install", "run", f"{worker['worker_id']}.pid").read_text()
        )
        # Long enough that the stream still runs when the worker is frozen.
        task = {**LONG, "max_tokens": 2048, "node": "n1", "model": f"file:{tiny_model_dir}"}
        events = []
        with queen.client() as c, c.stream("POST", "/v2/tasks", json=task) as r:
            lines = r.iter_lines()
            for line in lines:
                if line.startswith("data: {") and '"token"' in line:
                    break
            os.kill(worker["pid"], signal.SIGSTOP)  # mid-stream, until the OOM kill
            fill_group_until_the_worker_goes(record["memory"]["group"], worker["pid"])
            events = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
        error = events[-1]
        assert error["type"] == "error" and error["code"] == "WORKER_OOM", events[-3:]
        assert "OOM killer" in error["message"], error
        assert f"memory limit {LIMIT_MIB}.0 MiB" in error["message"], error
        details = error["details"]
        assert details["limit_bytes"] == LIMIT_MIB * MIB and details["phase"] == "serving"
        assert details["peak_bytes"] >= LIMIT_MIB * MIB * 0.9, details
    finally:
        stop_queen(queen)
