"""Failover over a cut link: two test hosts (network namespaces, each its own
sshd) serve one catalog model; the first host's cable is pulled while its
worker is idle, and a request routed to it is answered by the second host's
worker, within the request's deadline, with no error for the client."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.lifecycle_support import worker_python_on
from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.plugins.testbed import Testbed, TestHost
from tests.test_lifecycle import skip_unless_the_hosts_run_this_python

TASK = {"model": "pair", "prompt": "Hi", "max_tokens": 4, "temperature": 0}


def add_host(queen: QueenProcess, testbed: Testbed, host: TestHost, name: str) -> None:
    queen.add_node(
        {
            "node_name": name,
            "ssh_host": host.address,
            "ssh_port": host.port,
            "ssh_user": host.user,
            "ssh_key_path": str(testbed.client_key),
            "install_path": "~/.rbee",
            "worker_python": worker_python_on(host),
            "accept_new_host_key": True,
        }
    )


def shared_model(tiny_model_dir: Path) -> Path:
    """The tiny model at one path both hosts' users can read (a catalog entry
    names one path for all its nodes)."""
    root = Path(tempfile.mkdtemp(prefix="rbee-failover-"))
    shutil.copytree(tiny_model_dir, root / "tiny")
    subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
    return root / "tiny"


def run_task(queen: QueenProcess, **extra: object) -> list[dict[str, object]]:
    with queen.client() as c, c.stream("POST", "/v2/tasks", json=TASK, **extra) as r:  # type: ignore[arg-type]
        assert r.status_code == 200, r.read()
        return [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]


def test_a_cut_link_before_the_first_token_fails_over(
    testbed: Testbed, rbee_home: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    skip_unless_the_hosts_run_this_python()
    first, second = testbed.hosts[0], testbed.hosts[1]
    # The cut is noticed by the SSH keepalive alone: no health loop, no supervisor.
    monkeypatch.setenv("RBEE_HEALTH_INTERVAL", "0")
    monkeypatch.setenv("RBEE_SUPERVISOR_INTERVAL", "0")
    model = shared_model(tiny_model_dir)
    queen = start_queen(rbee_home)
    try:
        add_host(queen, testbed, first, "h1")
        add_host(queen, testbed, second, "h2")
        entry = {"name": "pair", "model_ref": f"file:{model}", "nodes": ["h1", "h2"]}
        with queen.client() as c:
            assert c.post("/v2/registry/models/add", json=entry).status_code == 201
        assert run_task(queen)[-1]["type"] == "end"  # h1's worker
        with queen.client() as c:
            held = {**TASK, "max_tokens": 2048}
            with c.stream("POST", "/v2/tasks", json=held) as r:  # h1 busy: h2 starts
                assert run_task(queen)[-1]["type"] == "end"
                r.close()
        time.sleep(1)  # both idle
        first.set_link(up=False)
        started = time.monotonic()
        deadline = str(int((time.time() + 30) * 1000))
        events = run_task(queen, headers={"x-request-deadline": deadline})
        took = time.monotonic() - started
    finally:
        first.set_link(up=True)
        stop_queen(queen)
        shutil.rmtree(model.parent, ignore_errors=True)
    print(f"answered {took:.1f} s after the cut")
    assert events[-1]["type"] == "end", events[-2:]
    assert not any(e["type"] == "error" for e in events)
    assert took < 30
    log = queen.log
    job = str(events[0]["job_id"])
    assert any(job in line and "failing over" in line for line in log.splitlines()), log[-3000:]
