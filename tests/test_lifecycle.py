"""Workers that look after themselves, tested with real processes: a worker
killed or frozen mid-stream, a long generation, a model that never loads, and a
node's link cut mid-stream. The queen's side (killed and started again with its
workers still running, shutting a worker down, the idle stop) is in
test_lifecycle_queen.py; the helpers both use are in lifecycle_support.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.lifecycle_support import (
    SYSTEM_PYTHON,
    Streaming,
    add_node,
    audit_entries,
    run_task,
    wait_for,
    worker_python_on,
    workers,
)
from tests.plugins.procs import worker_pids
from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.plugins.sshd import SshServer
from tests.plugins.testbed import Testbed, TestHost


def test_worker_killed_mid_stream_is_restarted(
    fast_queen: QueenProcess, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    add_node(fast_queen, sshd, tmp_path)
    run_task(fast_queen, tiny_model_dir, max_tokens=2)
    (before,) = workers(fast_queen)
    stream = Streaming(fast_queen, tiny_model_dir, max_tokens=2048)
    assert stream.first_token.wait(30)
    killed_at = time.monotonic()
    os.kill(before["pid"], signal.SIGKILL)
    stream.join(30)
    assert stream.events[-1]["type"] == "error"
    assert stream.events[-1]["code"] == "WORKER_DIED"
    # Ended once the helper says the process is gone and whether an OOM kill took
    # it (at most 2 s of asking), well before a keepalive (6 to 8 s) would notice.
    assert stream.ended_at is not None and stream.ended_at - killed_at < 5.0
    after = wait_for(
        lambda: [
            w for w in workers(fast_queen) if w["state"] == "idle" and w["pid"] != before["pid"]
        ]
    )
    assert [w["worker_id"] for w in after] == [before["worker_id"]]  # the same worker, again
    assert worker_pids(before["worker_id"]) == [after[0]["pid"]]
    events = run_task(fast_queen, tiny_model_dir, max_tokens=3)
    assert events[-1]["type"] == "end"


def test_frozen_worker_is_hung_killed_and_restarted(
    fast_queen: QueenProcess, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    add_node(fast_queen, sshd, tmp_path)
    run_task(fast_queen, tiny_model_dir, max_tokens=2)
    (before,) = workers(fast_queen)
    stream = Streaming(fast_queen, tiny_model_dir, max_tokens=2048)
    assert stream.first_token.wait(30)
    os.kill(before["pid"], signal.SIGSTOP)
    try:
        stream.join(30)
    finally:
        if worker_pids(before["worker_id"]) == [before["pid"]]:
            os.kill(before["pid"], signal.SIGCONT)
    assert stream.events[-1]["type"] == "error"
    wait_for(
        lambda: [
            w for w in workers(fast_queen) if w["state"] == "idle" and w["pid"] != before["pid"]
        ]
    )
    assert before["pid"] not in worker_pids(before["worker_id"])
    with fast_queen.client() as c:
        states = [
            e["to_state"]
            for e in c.get(f"/v2/workers/{before['worker_id']}/events").json()["events"]
        ]
    assert "hung" in states and "restarting" in states
    # Each fact audited once: one forced kill, one restart.
    killed = audit_entries(fast_queen, "worker.killed", before["worker_id"])
    restarted = audit_entries(fast_queen, "worker.restarted", before["worker_id"])
    assert [e["forced"] for e in killed] == [True]
    assert len(restarted) == 1 and restarted[0]["reason"]


def test_long_generation_that_keeps_producing_is_never_killed(
    fast_queen: QueenProcess, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    add_node(fast_queen, sshd, tmp_path)
    run_task(fast_queen, tiny_model_dir, max_tokens=2)
    (before,) = workers(fast_queen)
    # Longer than RBEE_HUNG_AFTER in total, but tokens never stop coming.
    events = run_task(fast_queen, tiny_model_dir, max_tokens=2048, temperature=0)
    assert events[-1]["type"] == "end"
    assert events[-1]["tokens_out"] == 2048
    (after,) = workers(fast_queen)
    assert after["pid"] == before["pid"] and after["state"] == "idle"


def test_model_that_never_loads_opens_the_circuit(
    rbee_home: Path,
    sshd: SshServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RBEE_BREAKER_FAILURES", "2")
    queen = start_queen(rbee_home)
    try:
        add_node(queen, sshd, tmp_path)
        broken = tmp_path / "broken-model"
        broken.mkdir()
        (broken / "config.json").write_text("{not json")
        codes = []
        for _ in range(3):
            with queen.client() as c:
                r = c.post(
                    "/v2/tasks",
                    json={"node": "n1", "model": f"file:{broken}", "prompt": "hi"},
                )
            codes.append((r.status_code, r.json()["error"]["code"], r.json()["error"]["message"]))
        assert [c[1] for c in codes] == ["WORKER_START_FAILED"] * 3
        assert "circuit open" not in codes[0][2]
        assert "circuit open" in codes[2][2]
        assert worker_pids(under=str(tmp_path)) == []
    finally:
        stop_queen(queen)


def test_link_cut_mid_stream_fails_fast_and_recovers(
    testbed: Testbed,
    rbee_home: Path,
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    skip_unless_the_hosts_run_this_python()
    host = testbed.hosts[0]
    model = copy_model_to(host, tiny_model_dir)
    # Nothing but the SSH keepalive may notice the cut: no health loop, no supervisor.
    monkeypatch.setenv("RBEE_HEALTH_INTERVAL", "0")
    monkeypatch.setenv("RBEE_SUPERVISOR_INTERVAL", "0")
    queen = start_queen(rbee_home)
    try:
        add_test_host(queen, testbed, host)
        assert run_task(queen, model, max_tokens=2)[-1]["type"] == "end"
        (before,) = workers(queen)

        stream = Streaming(queen, model, max_tokens=2048, temperature=0)
        assert stream.first_token.wait(30)
        host.set_link(up=False)
        # Bounded: the keepalive gives the node up within seconds (it used to
        # take 45 s or more, longer than this wait).
        stream.join(30)
        assert stream.events[-1]["type"] == "error", stream.events[-1]
        assert stream.events[-1]["code"] == "NODE_UNREACHABLE"
        assert not any(e["type"] == "end" for e in stream.events)

        host.set_link(up=True)
        events = served_again(queen, model)
        assert events[-1]["type"] == "end"
        (after,) = workers(queen)
        assert (after["worker_id"], after["pid"]) == (before["worker_id"], before["pid"])
        assert worker_pids(before["worker_id"]) == [before["pid"]]  # none duplicated
    finally:
        host.set_link(up=True)
        stop_queen(queen)
    assert worker_pids(under=host.home) == []


def skip_unless_the_hosts_run_this_python() -> None:
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0 or probe.stdout.strip() != str(sys.version_info[:2]):
        pytest.skip(
            f"the test hosts' user cannot run this interpreter and {SYSTEM_PYTHON} is not "
            "the same python version, so no worker (it needs torch) can run there"
        )


def copy_model_to(host: TestHost, tiny_model_dir: Path) -> Path:
    """The tiny model in the host's home, readable by its user."""
    model = Path(host.home) / "models" / "tiny-llama"
    if not model.exists():
        shutil.copytree(tiny_model_dir, model)
        subprocess.run(["chmod", "-R", "a+rX", str(Path(host.home) / "models")], check=True)
    return model


def add_test_host(queen: QueenProcess, testbed: Testbed, host: TestHost) -> None:
    body = {
        "node_name": "n1",
        "ssh_host": host.address,
        "ssh_port": host.port,
        "ssh_user": host.user,
        "ssh_key_path": str(testbed.client_key),
        "install_path": "~/.rbee",
        "worker_python": worker_python_on(host),
        "accept_new_host_key": True,
    }
    with queen.client() as c:
        r = c.post("/v2/registry/beehives/add", json=body)
    assert r.status_code == 201, r.text


def served_again(queen: QueenProcess, model: Path) -> list[dict[str, Any]]:
    """The worker kept running on the node: the next request reaches it again
    through a new connection (retried while it still finishes the cut-off
    generation into its socket and so has no free slot). Its events."""
    events: list[dict[str, Any]] = []

    def served() -> bool:
        task = {"node": "n1", "model": f"file:{model}", "prompt": "hi", "max_tokens": 3}
        with queen.client() as c, c.stream("POST", "/v2/tasks", json=task) as r:
            if r.status_code == 503:
                r.read()
                assert r.json()["error"]["code"] == "ALL_SLOTS_BUSY", r.text
                return False
            assert r.status_code == 200, r.read()
            events.extend(
                json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")
            )
        return True

    wait_for(served, timeout=60)
    return events
