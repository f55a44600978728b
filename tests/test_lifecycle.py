"""Workers that look after themselves, tested with real processes: a worker
killed or frozen mid-stream, a long generation, a model that never loads, and a
queen killed and started again with its workers still running."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.plugins.procs import worker_pids
from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.plugins.sshd import SshServer
from tests.plugins.testbed import Testbed, TestHost


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
    assert stream.ended_at is not None and stream.ended_at - killed_at < 2.0
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


def test_queen_killed_and_restarted_adopts_its_workers(
    rbee_home: Path, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    queen = start_queen(rbee_home)
    add_node(queen, sshd, tmp_path)
    run_task(queen, tiny_model_dir, max_tokens=2)
    (before,) = workers(queen)
    queen.proc.kill()
    queen.proc.wait()
    assert worker_pids(before["worker_id"]) == [before["pid"]]  # it outlived the queen

    again = start_queen(rbee_home)
    try:
        # Adopted: the queen holds a forward to it again (its url is set).
        adopted = wait_for(lambda: [w for w in workers(again) if w["url"]])
        assert [(w["worker_id"], w["pid"]) for w in adopted] == [
            (before["worker_id"], before["pid"])
        ]
        events = run_task(again, tiny_model_dir, max_tokens=3)
        assert events[-1]["type"] == "end"
        assert worker_pids(under=str(tmp_path)) == [before["pid"]]  # no duplicate started
    finally:
        stop_queen(again)
    assert worker_pids(under=str(tmp_path)) == []


def test_restarted_queen_cleans_up_a_worker_that_died_meanwhile(
    rbee_home: Path, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    queen = start_queen(rbee_home)
    add_node(queen, sshd, tmp_path)
    run_task(queen, tiny_model_dir, max_tokens=2)
    (before,) = workers(queen)
    queen.proc.kill()
    queen.proc.wait()
    os.kill(before["pid"], signal.SIGKILL)
    again = start_queen(rbee_home)
    try:
        wait_for(lambda: workers(again) == [])
        run_dir = tmp_path / "install" / "run"
        wait_for(lambda: not (run_dir / f"{before['worker_id']}.pid").exists())
    finally:
        stop_queen(again)


def test_shutdown_drains_the_stream_in_flight_then_stops_the_worker(
    rbee_home: Path,
    sshd: SshServer,
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A grace long enough for the whole stream, however slow the machine.
    monkeypatch.setenv("RBEE_WORKER_STOP_GRACE", "120")
    queen = start_queen(rbee_home)
    try:
        add_node(queen, sshd, tmp_path)
        run_task(queen, tiny_model_dir, max_tokens=2)
        (before,) = workers(queen)
        # Greedy: the tiny model never samples its end token, so all 2048 come.
        stream = Streaming(queen, tiny_model_dir, max_tokens=2048, temperature=0)
        assert stream.first_token.wait(30)
        answer: dict[str, Any] = {}

        def shut_down() -> None:
            with queen.client() as c:
                r = c.post("/v2/workers/shutdown", json={"worker_id": before["worker_id"]})
            answer.update(status=r.status_code, body=r.json())

        stopper = threading.Thread(target=shut_down, daemon=True)
        stopper.start()
        wait_for(lambda: [w for w in workers(queen) if w["state"] == "draining"])
        with queen.client() as c:
            r = c.post(
                "/v2/tasks",
                json={"node": "n1", "model": f"file:{tiny_model_dir}", "prompt": "hi"},
            )
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "WORKER_DRAINING"
        assert r.json()["error"]["details"]["worker_id"] == before["worker_id"]
        assert stream.ended_at is None  # the refusal came while the stream still ran

        stream.join(120)
        assert stream.events[-1]["type"] == "end"
        assert stream.events[-1]["tokens_out"] == 2048
        stopper.join(60)
        assert answer["status"] == 200, answer
        assert answer["body"] == {
            "worker_id": before["worker_id"],
            "stopped": True,
            "forced": False,
        }
        assert worker_pids(before["worker_id"]) == []
        assert workers(queen) == []
        with queen.client() as c:
            states = [
                e["to_state"]
                for e in c.get(f"/v2/workers/{before['worker_id']}/events").json()["events"]
            ]
        assert states[-2:] == ["draining", "stopped"]
    finally:
        stop_queen(queen)


def test_idle_worker_is_stopped_after_the_idle_time(
    rbee_home: Path,
    sshd: SshServer,
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RBEE_SUPERVISOR_INTERVAL", "0.3")
    monkeypatch.setenv("RBEE_IDLE_STOP", "1")
    monkeypatch.setenv("RBEE_HEALTH_INTERVAL", "0")
    queen = start_queen(rbee_home)
    try:
        add_node(queen, sshd, tmp_path)
        events = run_task(queen, tiny_model_dir, max_tokens=2)
        assert events[-1]["type"] == "end"
        (row,) = wait_for(lambda: [w for w in _all_workers(queen) if w["state"] == "stopped"])
        assert isinstance(row["pid"], int)
        assert worker_pids(row["worker_id"]) == []
        assert worker_pids(under=str(tmp_path)) == []
        with queen.client() as c:
            reasons = [
                (e["to_state"], e["reason"])
                for e in c.get(f"/v2/workers/{row['worker_id']}/events").json()["events"]
            ]
        assert any(to == "draining" and reason.startswith("idle for") for to, reason in reasons)
        assert reasons[-1] == ("stopped", "stopped")
    finally:
        stop_queen(queen)


def _all_workers(queen: QueenProcess) -> list[dict[str, Any]]:
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


def test_link_cut_mid_stream_fails_fast_and_recovers(
    testbed: Testbed,
    rbee_home: Path,
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
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
    host = testbed.hosts[0]
    model = Path(host.home) / "models" / "tiny-llama"
    if not model.exists():
        shutil.copytree(tiny_model_dir, model)
        subprocess.run(["chmod", "-R", "a+rX", str(Path(host.home) / "models")], check=True)
    # Nothing but the SSH keepalive may notice the cut: no health loop, no supervisor.
    monkeypatch.setenv("RBEE_HEALTH_INTERVAL", "0")
    monkeypatch.setenv("RBEE_SUPERVISOR_INTERVAL", "0")
    queen = start_queen(rbee_home)
    try:
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
        # The worker kept running on the node: the next request reaches it again
        # through a new connection (retried while it still finishes the cut-off
        # generation into its socket and so has no free slot).
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
        assert events[-1]["type"] == "end"
        (after,) = workers(queen)
        assert (after["worker_id"], after["pid"]) == (before["worker_id"], before["pid"])
        assert worker_pids(before["worker_id"]) == [before["pid"]]  # none duplicated
    finally:
        host.set_link(up=True)
        stop_queen(queen)
    assert worker_pids(under=host.home) == []
