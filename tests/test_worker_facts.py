"""Each fact about a worker is told once, with its real ids: one forced kill is
one `worker.killed` audit entry, one restart one `worker.restarted`, and a
finished request's event names the job the client saw."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import httpx

from rbee_queen.audit import audit_files
from tests.lifecycle_support import Streaming, add_node, run_task, wait_for, workers
from tests.plugins.procs import worker_pids
from tests.plugins.queen import QueenProcess
from tests.plugins.sshd import SshServer


def audit_entries(queen: QueenProcess, event: str, worker_id: str) -> list[dict[str, Any]]:
    text = "".join(p.read_text() for p in audit_files(queen.home / "audit"))
    entries = [json.loads(line) for line in text.splitlines()]
    return [e for e in entries if e["event"] == event and e.get("worker_id") == worker_id]


def test_a_hung_worker_killed_and_restarted_is_audited_once_each(
    fast_queen: QueenProcess, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    add_node(fast_queen, sshd, tmp_path)
    run_task(fast_queen, tiny_model_dir, max_tokens=2)
    (before,) = workers(fast_queen)
    stream = Streaming(fast_queen, tiny_model_dir, max_tokens=2048)
    assert stream.first_token.wait(30)
    os.kill(before["pid"], signal.SIGSTOP)  # frozen: only SIGKILL ends it
    try:
        stream.join(30)
    finally:
        if worker_pids(before["worker_id"]) == [before["pid"]]:
            os.kill(before["pid"], signal.SIGCONT)
    wait_for(
        lambda: [
            w for w in workers(fast_queen) if w["state"] == "idle" and w["pid"] != before["pid"]
        ]
    )
    killed = audit_entries(fast_queen, "worker.killed", before["worker_id"])
    restarted = audit_entries(fast_queen, "worker.restarted", before["worker_id"])
    assert [e["forced"] for e in killed] == [True]
    assert len(restarted) == 1 and restarted[0]["reason"]


class EventLog:
    """The queen's /v2/events, read on a thread until `stop`."""

    def __init__(self, queen: QueenProcess) -> None:
        self.events: list[dict[str, Any]] = []
        self.subscribed = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(queen,), daemon=True)
        self._thread.start()
        assert self.subscribed.wait(10)

    def _run(self, queen: QueenProcess) -> None:
        # The stream ends when the queen stops, as the test's last step.
        with contextlib.suppress(httpx.HTTPError), queen.client() as c:
            with c.stream("GET", "/v2/events") as r:
                for line in r.iter_lines():
                    if line.startswith("data: {"):
                        self.events.append(json.loads(line[6:]))
                        self.subscribed.set()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]


def test_a_finished_request_names_its_job(
    fast_queen: QueenProcess, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    add_node(fast_queen, sshd, tmp_path)
    log = EventLog(fast_queen)
    stream = run_task(fast_queen, tiny_model_dir, max_tokens=3)
    (job_id,) = [e["job_id"] for e in stream if e["type"] == "started"]
    wait_for(lambda: log.of("request_finished"))
    (started,) = log.of("request_started")
    (finished,) = log.of("request_finished")
    assert started["job_id"] == finished["job_id"] == job_id
    assert finished["outcome"] == "MAX_TOKENS" and finished["tokens_out"] == 3
