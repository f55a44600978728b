"""Ctrl-C on `rbee-keeper infer`, end to end: a real keeper process, a real queen,
a real worker behind a real sshd. The keeper exits 130 with what it printed
kept, and the job stops on the worker, freeing its only slot at once."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.keeper_support import ctrl_c_as_at_a_terminal
from tests.plugins.queen import QueenProcess
from tests.plugins.sshd import SshServer

FINISHED = re.compile(r"finished: stop_reason=(\w+) .*tokens_out=(\d+)")
MAX_TOKENS = 2048  # seconds of generation on the tiny model: far longer than the test waits


def read_some(stream: Any, at_least: int, timeout_s: float = 120.0) -> bytes:
    """At least `at_least` bytes of a pipe (the worker may still be cold)."""
    seen = b""
    deadline = time.monotonic() + timeout_s
    while len(seen) < at_least:
        ready, _, _ = select.select([stream], [], [], max(deadline - time.monotonic(), 0))
        assert ready, f"fewer than {at_least} bytes in {timeout_s} s: {seen!r}"
        chunk = os.read(stream.fileno(), 4096)
        assert chunk, f"stdout closed early: {seen!r}"
        seen += chunk
    return seen


def worker_log(queen: QueenProcess, worker_id: str) -> str:
    with queen.client() as c:
        r = c.get("/v2/logs", params={"worker_id": worker_id, "lines": 200})
    assert r.status_code == 200, r.text
    return "\n".join(r.json()["lines"])


def test_ctrl_c_cancels_the_job_on_the_worker_and_exits_130(
    queen: QueenProcess, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    body = sshd.node_body("n1", tmp_path / "install", accept_new_host_key=True)
    with queen.client() as c:
        assert c.post("/v2/registry/beehives/add", json=body).status_code == 201
    argv = [sys.executable, "-m", "rbee_keeper", "infer", "--node", "n1"]
    argv += ["--model", f"file:{tiny_model_dir}", "--prompt", "Once upon a time"]
    argv += ["--max-tokens", str(MAX_TOKENS), "--temperature", "0"]  # greedy: no EOS here
    env = {**os.environ, "RBEE_HOME": str(queen.home), "RBEE_QUEEN_URL": queen.url}
    process = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=ctrl_c_as_at_a_terminal,
    )
    try:
        assert process.stdout is not None
        before = read_some(process.stdout, at_least=40)  # tokens are streaming
        process.send_signal(signal.SIGINT)
        rest, err = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()

    assert process.returncode == 130, err
    assert err.decode().strip().endswith("interrupted")
    output = before + rest
    assert output.startswith(before) and output.endswith(b"\n")  # kept, line ended
    assert len(output.strip()) >= 40

    with queen.client() as c:
        (worker,) = c.get("/v2/workers/list").json()["workers"]
    # The worker saw the disconnect and stopped the job well short of max_tokens.
    finished: list[str] = []
    deadline = time.monotonic() + 10
    while not finished and time.monotonic() < deadline:
        finished = FINISHED.findall(worker_log(queen, worker["worker_id"]))
        time.sleep(0.1)
    assert finished, worker_log(queen, worker["worker_id"])
    (reason, tokens_out) = finished[-1]
    assert reason == "CANCELLED" and int(tokens_out) < MAX_TOKENS

    # Its only slot is free again: the next request is served, not ALL_SLOTS_BUSY,
    # by the same worker, which is idle afterwards.
    task = {"node": "n1", "model": f"file:{tiny_model_dir}", "prompt": "hi", "max_tokens": 3}
    with queen.client() as c:
        r = c.post("/v2/tasks", json=task)
        assert r.status_code == 200, r.text
        assert '"type": "end"' in r.text
        (after,) = c.get("/v2/workers/list").json()["workers"]
    assert after["worker_id"] == worker["worker_id"] and after["state"] == "idle"
