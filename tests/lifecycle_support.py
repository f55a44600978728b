"""What the lifecycle tests share (and tests of the workers' facts and access
use too): a node on the loopback sshd, the queen's workers, tasks read to the
end or streamed on a thread, and a worker python for a test host's user."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rbee_queen.audit import audit_files
from tests.plugins.queen import QueenProcess
from tests.plugins.sshd import SshServer
from tests.plugins.testbed import TestHost


def add_node(queen: QueenProcess, sshd: SshServer, tmp_path: Path) -> None:
    body = sshd.node_body("n1", tmp_path / "install", accept_new_host_key=True)
    with queen.client() as c:
        r = c.post("/v2/registry/beehives/add", json=body)
    assert r.status_code == 201, r.text


def workers(queen: QueenProcess) -> list[dict[str, Any]]:
    with queen.client() as c:
        return list(c.get("/v2/workers/list").json()["workers"])


def wait_for(what: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def run_task(
    queen: QueenProcess, model: Path, node: str = "n1", **extra: Any
) -> list[dict[str, Any]]:
    task = {"node": node, "model": f"file:{model}", "prompt": "hello", **extra}
    events = []
    with queen.client() as c, c.stream("POST", "/v2/tasks", json=task) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: {"):
                events.append(json.loads(line[6:]))
    return events


class Streaming:
    """A long task read on a thread; `first_token` is set once a token arrived."""

    def __init__(
        self,
        queen: QueenProcess,
        model: Path,
        max_tokens: int,
        temperature: float = 0.8,
        node: str = "n1",
    ) -> None:
        self.events: list[dict[str, Any]] = []
        self.first_token = threading.Event()
        self.ended_at: float | None = None
        self._thread = threading.Thread(
            target=self._run, args=(queen, model, max_tokens, temperature, node), daemon=True
        )
        self._thread.start()

    def _run(
        self, queen: QueenProcess, model: Path, max_tokens: int, temperature: float, node: str
    ) -> None:
        task = {
            "node": node,
            "model": f"file:{model}",
            "prompt": "hello",
            "max_tokens": max_tokens,
            "temperature": temperature,
            "seed": 1,
        }
        with queen.client() as c, c.stream("POST", "/v2/tasks", json=task) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    self.events.append(json.loads(line[6:]))
                    if self.events[-1]["type"] == "token":
                        self.first_token.set()
        self.ended_at = time.monotonic()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the stream never ended"


def worker_states(queen: QueenProcess, worker_id: str) -> list[str]:
    """Every state the worker went through, from the queen's event records."""
    with queen.client() as c:
        return [
            w["state"]
            for w in c.get("/v2/workers/list?all=1").json()["workers"]
            if w["worker_id"] == worker_id
        ]


def all_workers(queen: QueenProcess) -> list[dict[str, Any]]:
    with queen.client() as c:
        return list(c.get("/v2/workers/list?all=1").json()["workers"])


SYSTEM_PYTHON = "/usr/bin/python3"


def worker_python_on(host: TestHost) -> str:
    """A python the host's own (non-root) user can run the worker with: a venv of
    the system python that also sees this checkout's packages (torch included)."""
    venv = Path(host.home) / "worker-venv"
    if not venv.exists():
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True)
        ours = sysconfig.get_paths()["purelib"]
        minor = f"python{sys.version_info.major}.{sys.version_info.minor}"
        pth = venv / "lib" / minor / "site-packages" / "rbee-checkout.pth"
        pth.write_text(f"import site; site.addsitedir({ours!r})\n")
        subprocess.run(["chmod", "-R", "a+rX", str(venv)], check=True)
    return str(venv / "bin" / "python")


def audit_entries(queen: QueenProcess, event: str, worker_id: str) -> list[dict[str, Any]]:
    """The queen's audit entries of one kind about one worker."""
    text = "".join(p.read_text() for p in audit_files(queen.home / "audit"))
    entries = [json.loads(line) for line in text.splitlines()]
    return [e for e in entries if e["event"] == event and e.get("worker_id") == worker_id]
