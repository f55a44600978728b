"""Workers that look after themselves, tested with real processes: a worker
killed or frozen mid-stream, a long generation, a model that never loads, and a
queen killed and started again with its workers still running."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.plugins.procs import worker_pids
from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.plugins.sshd import SshServer

FAST_SUPERVISION = {
    "RBEE_SUPERVISOR_INTERVAL": "0.3",
    "RBEE_HUNG_AFTER": "1.5",
    "RBEE_RESTART_BASE_DELAY": "0.2",
    "RBEE_WORKER_HEALTH_TIMEOUT": "1",
    "RBEE_HEALTH_INTERVAL": "0",
}


@pytest.fixture
def fast_queen(rbee_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[QueenProcess]:
    for name, value in FAST_SUPERVISION.items():
        monkeypatch.setenv(name, value)
    queen = start_queen(rbee_home)
    try:
        yield queen
    finally:
        stop_queen(queen)


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


def run_task(queen: QueenProcess, model: Path, **extra: Any) -> list[dict[str, Any]]:
    task = {"node": "n1", "model": f"file:{model}", "prompt": "hello", **extra}
    events = []
    with queen.client() as c, c.stream("POST", "/v2/tasks", json=task) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: {"):
                events.append(json.loads(line[6:]))
    return events


class Streaming:
    """A long task read on a thread; `first_token` is set once a token arrived."""

    def __init__(self, queen: QueenProcess, model: Path, max_tokens: int) -> None:
        self.events: list[dict[str, Any]] = []
        self.first_token = threading.Event()
        self.ended_at: float | None = None
        self._thread = threading.Thread(
            target=self._run, args=(queen, model, max_tokens), daemon=True
        )
        self._thread.start()

    def _run(self, queen: QueenProcess, model: Path, max_tokens: int) -> None:
        task = {
            "node": "n1",
            "model": f"file:{model}",
            "prompt": "hello",
            "max_tokens": max_tokens,
            "temperature": 0.8,
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
