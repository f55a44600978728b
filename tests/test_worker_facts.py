"""A finished request's event names the job the client saw (and the one that
started it). That each kill and restart is audited once is checked where a
worker is frozen, killed and restarted: tests/test_lifecycle.py."""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path
from typing import Any

import httpx

from tests.lifecycle_support import add_node, run_task, wait_for
from tests.plugins.queen import QueenProcess
from tests.plugins.sshd import SshServer


class EventLog:
    """The queen's /v2/events, read on a thread until the queen stops."""

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
