"""The worker's own token: required on every route but /health, handed over in
the spawn environment (never argv), and sent by the queen on each call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from rbee_queen.audit import audit_files, verify
from tests.plugins.queen import QueenProcess
from tests.plugins.sshd import SshServer
from tests.test_infer_e2e import add_node, stream_task, workers

TOKEN = "worker-token-0123456789abcdef"


@pytest.fixture
def worker_url(tiny_model_dir: Path, tmp_path: Path) -> object:
    state = tmp_path / "w.state.json"
    argv = [sys.executable, "-m", "rbee_worker", "--worker-id", "w-auth"]
    argv += ["--model", str(tiny_model_dir), "--port", "0", "--state-file", str(state)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RBEE_WORKER_TOKEN": TOKEN}
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 20
        while not state.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "worker did not start"
            time.sleep(0.02)
        port = json.loads(state.read_text())["port"]
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_worker_routes_need_the_token_but_health(worker_url: tuple) -> None:
    proc, url = worker_url
    with httpx.Client(base_url=url, timeout=10) as c:
        assert c.get("/health").status_code in (200, 503)  # public, loaded or loading
        r = c.get("/v1/ready")
        assert (r.status_code, r.json()["error"]["code"]) == (401, "MISSING_API_KEY")
        assert r.headers["www-authenticate"] == "Bearer"
        for value in (f"bearer {TOKEN}", f"Bearer  {TOKEN}", f"Bearer {TOKEN}x"):
            r = c.get("/v1/ready", headers={"Authorization": value})
            assert (r.status_code, r.json()["error"]["code"]) == (401, "INVALID_API_KEY")
        r = c.post("/v1/inference", json={"job_id": "j", "prompt": "hi"})
        assert r.status_code == 401  # refused before the body is even read
        assert c.delete("/v1/inference/j").status_code == 401
        ok = c.get("/v1/ready", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    assert TOKEN.encode() not in cmdline


def test_the_queen_gives_each_worker_a_token_and_uses_it(
    queen: QueenProcess, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    add_node(queen, sshd, tmp_path)
    task = {"node": "n1", "model": f"file:{tiny_model_dir}", "prompt": "secret prompt words"}
    events, _ = stream_task(queen, **task, max_tokens=3)
    assert events[-1] == {"type": "DONE"} and events[-2]["type"] == "end"
    (worker,) = workers(queen)
    # The forward on the queen's machine reaches the worker, which wants its token.
    with httpx.Client(base_url=worker["url"], timeout=10) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/v1/ready").status_code == 401
        assert (
            c.get("/v1/ready", headers={"Authorization": f"Bearer {queen.token}"}).status_code
            == 401
        )
    argv = Path(f"/proc/{worker['pid']}/cmdline").read_bytes()
    assert b"RBEE_WORKER_TOKEN" not in argv and b"Bearer" not in argv

    audit = "".join(p.read_text() for p in audit_files(queen.home / "audit"))
    events_seen = [json.loads(line)["event"] for line in audit.splitlines()]
    for name in ("node.added", "worker.spawned", "inference.started", "inference.completed"):
        assert name in events_seen
    assert "secret prompt words" not in audit  # counts, never the prompt's text
    assert verify(queen.home / "audit").ok
