"""`rbee-keeper logs`: worker logs read from the node through the queen."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rbee_keeper.commands.logs import new_lines
from tests.plugins.queen import QueenProcess
from tests.plugins.sshd import SshServer


def test_new_lines_skips_what_was_already_printed() -> None:
    assert new_lines([], ["a", "b"]) == ["a", "b"]
    assert new_lines(["a", "b", "c"], ["b", "c", "d", "e"]) == ["d", "e"]
    assert new_lines(["a", "b"], ["a", "b"]) == []
    assert new_lines(["x"], ["y"]) == ["y"]


def test_logs_of_a_node_through_the_queen(
    queen: QueenProcess, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    body = sshd.node_body("n1", tmp_path / "inst", accept_new_host_key=True)
    task = {"node": "n1", "model": f"file:{tiny_model_dir}", "prompt": "hi", "max_tokens": 2}
    with queen.client() as c:
        assert c.post("/v2/registry/beehives/add", json=body).status_code == 201
        with c.stream("POST", "/v2/tasks", json=task) as r:
            r.read()
        (worker,) = c.get("/v2/workers/list").json()["workers"]
    env = {**os.environ, "RBEE_HOME": str(queen.home), "RBEE_QUEEN_URL": queen.url}
    run = subprocess.run(
        [sys.executable, "-m", "rbee_keeper", "logs", "--node", "n1", "--lines", "200"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines and all(line.startswith(f"{worker['worker_id']} | ") for line in lines)
    assert any("listening on 127.0.0.1" in line for line in lines)
    unknown = subprocess.run(
        [sys.executable, "-m", "rbee_keeper", "logs", "--node", "ghost"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unknown.returncode == 1
    assert "[NODE_NOT_FOUND]" in unknown.stderr
