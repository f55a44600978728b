"""The settings on a real queen: refused at start, shown with their sources,
reloaded on SIGHUP while a stream runs, a bad file on SIGHUP changing nothing."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx

from tests.lifecycle_support import Streaming, add_node, wait_for, workers
from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.plugins.sshd import SshServer

SLOW = "[health]\ninterval_s = 60\n[supervisor]\ninterval_s = 60\n"
FAST = (
    "[ssh]\nconnect_timeout_s = 3\n[health]\ninterval_s = 0.3\n"
    "[supervisor]\ninterval_s = 0.3\n[restart]\nmax_attempts = 0\n"
)


class EventTail:
    """/v2/events read on a thread, so a test can wait for what the queen publishes."""

    def __init__(self, queen: QueenProcess) -> None:
        self.events: list[dict[str, Any]] = []
        threading.Thread(target=self._run, args=(queen,), daemon=True).start()
        wait_for(lambda: self.events)  # the snapshot: subscribed

    def _run(self, queen: QueenProcess) -> None:
        with contextlib.suppress(httpx.HTTPError):  # the queen stopping ends the stream
            with queen.client() as c, c.stream("GET", "/v2/events", timeout=None) as r:
                for line in r.iter_lines():
                    if line.startswith("data: {"):
                        self.events.append(json.loads(line[6:]))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e["type"] == kind]


def settings(queen: QueenProcess) -> dict[str, Any]:
    with queen.client() as c:
        r = c.get("/v2/admin/config")
    assert r.status_code == 200, r.text
    return {row["key"]: row for row in r.json()["settings"]}


def test_a_bad_file_refuses_to_start_listing_every_problem_and_writes_nothing(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "queen.toml").write_text('[server]\nprot = 8080\n[health]\ninterval_s = "often"\n')
    env = {**os.environ, "RBEE_HOME": str(home), "RBEE_SUPERVISOR_INTERVAL": "-1"}
    run = subprocess.run(
        [sys.executable, "-m", "rbee_queen"], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2, run.stderr
    assert "[CONFIG_INVALID] 3 problem(s)" in run.stderr
    assert "unknown key server.prot (did you mean 'port'?)" in run.stderr
    assert "health.interval_s = 'often' (from file)" in run.stderr
    assert "supervisor.interval_s = '-1' (from environment RBEE_SUPERVISOR_INTERVAL)" in run.stderr
    assert sorted(p.name for p in home.iterdir()) == ["queen.toml"]  # nothing written


def test_check_config_prints_each_value_with_its_source(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "queen.toml").write_text("[restart]\nmax_attempts = 4\n")
    env = {**os.environ, "RBEE_HOME": str(home), "RBEE_IDLE_STOP": "9"}
    argv = [sys.executable, "-m", "rbee_queen", "--check-config", "--port", "9100"]
    run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "server.port = 9100  # flag, restart" in run.stdout
    assert "restart.max_attempts = 4  # file, reloadable" in run.stdout
    assert "workers.idle_stop_s = 9.0  # environment RBEE_IDLE_STOP, reloadable" in run.stdout
    assert "health.interval_s = 5.0  # default, reloadable" in run.stdout
    assert sorted(p.name for p in home.iterdir()) == ["queen.toml"]


def test_sighup_applies_health_and_restart_policy_while_a_stream_continues(
    rbee_home: Path, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    (rbee_home / "queen.toml").write_text(SLOW)
    queen = start_queen(rbee_home)
    try:
        add_node(queen, sshd, tmp_path)
        tail = EventTail(queen)
        stream = Streaming(queen, tiny_model_dir, max_tokens=2048, temperature=0)
        assert stream.first_token.wait(120)
        (rbee_home / "queen.toml").write_text(FAST)
        os.kill(queen.proc.pid, signal.SIGHUP)
        (reloaded,) = wait_for(lambda: tail.of("config_reloaded"))
        assert reloaded["ok"] and reloaded["error"] is None
        assert set(reloaded["applied"]) == {
            "health.interval_s",
            "supervisor.interval_s",
            "restart.max_attempts",
        }
        assert reloaded["restart_needed"] == ["ssh.connect_timeout_s"]
        assert stream.ended_at is None  # the reload came mid-stream
        stream.join(120)
        assert stream.events[-1]["type"] == "end" and stream.events[-1]["tokens_out"] == 2048
        # Health rounds every 0.3 s now (60 s before): several within seconds.
        wait_for(lambda: len(tail.of("health_round")) >= 3, timeout=10)
        now = settings(queen)
        assert now["restart.max_attempts"] == {
            "key": "restart.max_attempts",
            "value": 0,
            "source": "file",
            "reloadable": True,
        }
        assert now["server.port"]["value"] == int(queen.url.rsplit(":", 1)[1])  # kept
        assert now["server.port"]["source"] == "flag"
        # max_attempts = 0: a killed worker is not started again.
        (worker,) = workers(queen)
        os.kill(worker["pid"], signal.SIGKILL)
        failed = wait_for(lambda: [w for w in workers(queen) if w["state"] == "failed"])
        assert "gave up after 0 restarts" in json.dumps(failed)
        assert "ssh.connect_timeout_s changed but needs a restart" in queen.log
    finally:
        stop_queen(queen)


def test_a_bad_file_on_sighup_changes_nothing_and_says_why(queen: QueenProcess) -> None:
    tail = EventTail(queen)
    before = settings(queen)
    (queen.home / "queen.toml").write_text("[health]\ninterval_s = 1\nintervall = 2\n")
    os.kill(queen.proc.pid, signal.SIGHUP)
    (event,) = wait_for(lambda: tail.of("config_reloaded"))
    assert not event["ok"] and event["applied"] == []
    assert "unknown key health.intervall (did you mean 'interval_s'?)" in event["error"]
    assert settings(queen) == before
    assert "config reload failed, nothing changed" in queen.log
    with queen.client() as c:
        r = c.post("/v2/admin/reload")
    assert r.status_code == 400 and r.json()["error"]["code"] == "CONFIG_INVALID"
    assert any("intervall" in p for p in r.json()["error"]["details"]["problems"])
    (queen.home / "queen.toml").write_text("[health]\ninterval_s = 1\n")
    with queen.client() as c:
        r = c.post("/v2/admin/reload")
    assert r.status_code == 200 and r.json()["applied"] == ["health.interval_s"]
    assert settings(queen)["health.interval_s"]["value"] == 1.0


def test_admin_routes_refuse_a_plain_key_and_a_reload_changes_the_log_level(
    queen: QueenProcess,
) -> None:
    with queen.client() as c:
        r = c.post("/v2/keys/add", json={"name": "plain", "admin": False})
        assert r.status_code == 201, r.text
        plain = r.json()["token"]
    with queen.client(token=plain) as c:
        for method, path in (("GET", "/v2/admin/config"), ("POST", "/v2/admin/reload")):
            r = c.request(method, path)
            assert (r.status_code, r.json()["error"]["code"]) == (403, "FORBIDDEN"), path
    assert " DEBUG " not in queen.log  # info, the default, until the reload
    (queen.home / "queen.toml").write_text('[server]\nlog_level = "debug"\n')
    with queen.client() as c:
        r = c.post("/v2/admin/reload")
        assert r.status_code == 200 and r.json()["applied"] == ["server.log_level"]
        c.get("/v2/workers/list")  # a request, logged at debug level from now on
    assert settings(queen)["server.log_level"]["value"] == "debug"
    wait_for(lambda: " DEBUG " in queen.log)
