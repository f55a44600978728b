"""The queen's time limits, each reached on purpose and cheaply: a worker whose
load never ends (LOADING_TIMEOUT), a control request whose helper op stalls
(the control deadline, REQUEST_TIMEOUT), and a helper op past its own limit
(HELPER_FAILED). Each asserts the code, the message, and that nothing is left
behind: no worker process, no row left loading, no stalled call pending."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from rbee_queen.errors import HelperFailed
from rbee_queen.fleet.hive_client import HiveClient
from tests.lifecycle_support import all_workers, workers
from tests.plugins.procs import worker_pids
from tests.plugins.queen import start_queen, stop_queen
from tests.plugins.sshd import SshServer

REMOTE = Path(__file__).resolve().parent.parent / "remote"

# A worker python whose worker listens at once and then never finishes loading
# (torch is not even imported); anything else is passed to the interpreter.
NEVER_LOADS = f"""#!{sys.executable}
import os, runpy, sys, threading
if sys.argv[1:3] != ["-m", "rbee_worker"]:
    os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
from rbee_worker.backends import torch_backend
torch_backend.TorchBackend.load = lambda self, progress: threading.Event().wait()
sys.argv = [sys.argv[0], *sys.argv[3:]]
runpy.run_module("rbee_worker", run_name="__main__", alter_sys=True)
"""


def test_a_load_past_the_loading_timeout_leaves_no_worker_behind(
    rbee_home: Path,
    sshd: SshServer,
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    python = tmp_path / "worker-python"
    python.write_text(NEVER_LOADS)
    python.chmod(0o755)
    monkeypatch.setenv("RBEE_WORKER_LOADING_TIMEOUT", "1")
    queen = start_queen(rbee_home)
    try:
        body = sshd.node_body("n1", tmp_path / "install", accept_new_host_key=True)
        task = {"node": "n1", "model": f"file:{tiny_model_dir}", "prompt": "hi"}
        with queen.client() as c:
            r = c.post("/v2/registry/beehives/add", json={**body, "worker_python": str(python)})
            assert r.status_code == 201, r.text
            r = c.post("/v2/tasks", json=task)
        error = r.json()["error"]
        assert r.status_code == 504 and error["code"] == "LOADING_TIMEOUT", r.text
        found = re.fullmatch(r"worker (w-[0-9a-f]+) still loading after 1s", error["message"])
        assert found, error["message"]
        assert worker_pids(under=str(tmp_path)) == []
        assert workers(queen) == []
        rows = [w for w in all_workers(queen) if w["worker_id"] == found[1]]
        assert [w["state"] for w in rows] == ["stopped"], rows
    finally:
        stop_queen(queen)


def _helpers_under(root: Path) -> list[int]:
    """The node helper processes running in an install path under `root`."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if b"rbee_hive" in (proc / "cmdline").read_bytes():
                if os.readlink(proc / "cwd").startswith(str(root)):
                    pids.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return pids


def test_a_control_request_whose_helper_op_stalls_ends_at_the_control_deadline(
    rbee_home: Path, sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RBEE_CONTROL_TIMEOUT", "4")  # 30 s by default
    monkeypatch.setenv("RBEE_HEALTH_INTERVAL", "600")  # no health round meanwhile
    queen = start_queen(rbee_home)
    try:
        body = sshd.node_body("n1", tmp_path / "install", accept_new_host_key=True)
        with queen.client() as c:
            assert c.post("/v2/registry/beehives/add", json=body).status_code == 201
            (helper,) = _helpers_under(tmp_path)
            os.kill(helper, signal.SIGSTOP)  # its probe will not be answered in time
            try:
                r = c.get("/v2/nodes/status")
            finally:
                os.kill(helper, signal.SIGCONT)
            error = r.json()["error"]
            assert r.status_code == 504 and error["code"] == "REQUEST_TIMEOUT", r.text
            assert error["message"] == "the request deadline passed before an answer was ready"
            again = c.get("/v2/nodes/status")  # the late answer was dropped, the channel lives
            assert again.status_code == 200, again.text
        assert _helpers_under(tmp_path) == [helper]
    finally:
        stop_queen(queen)


class _Lines:
    """asyncio's stream reader and writer as the helper client's line protocol."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None and proc.stdin is not None
        self._out, self._in = proc.stdout, proc.stdin

    async def readline(self) -> str:
        return (await self._out.readline()).decode()

    def write(self, data: str) -> None:
        self._in.write(data.encode())


async def test_a_helper_op_past_its_limit_is_helper_failed_and_the_channel_goes_on() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-S",
        "-E",
        "-u",
        "-m",
        "rbee_hive",
        cwd=REMOTE,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    lines = _Lines(proc)
    client = HiveClient("n1", lines, lines)
    try:
        assert (await client.call("ping", timeout=10))["pong"] is True
        proc.send_signal(signal.SIGSTOP)
        with pytest.raises(HelperFailed, match=r"^helper on n1 did not answer ping in 0\.3s$"):
            await client.call("ping", timeout=0.3)
        assert client._pending == {}  # nothing waits for the late answer
        proc.send_signal(signal.SIGCONT)
        assert (await client.call("ping", timeout=10))["pong"] is True
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        assert await asyncio.wait_for(proc.wait(), 10) == 0  # stdin closed: the helper exits
