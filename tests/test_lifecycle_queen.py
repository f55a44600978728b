"""The queen's side of the workers' lifecycle, with real processes: a queen
killed and started again with its workers still running (or dead meanwhile),
a worker shut down while it streams, and a worker stopped after its idle time."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.lifecycle_support import Streaming, add_node, all_workers, run_task, wait_for, workers
from tests.plugins.procs import worker_pids
from tests.plugins.queen import start_queen, stop_queen
from tests.plugins.sshd import SshServer


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
        (row,) = wait_for(lambda: [w for w in all_workers(queen) if w["state"] == "stopped"])
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
