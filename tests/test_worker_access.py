"""Direct worker access: a node set to `worker_access = "direct"` has its workers
listen on its address too (still behind their bearer token), and the queen
calls them there instead of through an SSH port forward."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from rbee_keeper.cli import main as keeper
from rbee_queen.store.db import open_database
from rbee_queen.store.tables import Node
from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.plugins.sshd import SshServer
from tests.plugins.testbed import Testbed, TestHost
from tests.test_lifecycle import SYSTEM_PYTHON, Streaming, run_task, worker_python_on


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["t"] for e in events if e["type"] == "token")


def the_worker(queen: QueenProcess) -> dict[str, Any]:
    with queen.client() as c:
        (worker,) = c.get("/v2/workers/list").json()["workers"]
    return dict(worker)


def nodes(queen: QueenProcess) -> dict[str, dict[str, Any]]:
    with queen.client() as c:
        return {n["node_name"]: n for n in c.get("/v2/registry/beehives/list").json()["nodes"]}


# --- the setting -----------------------------------------------------------------


def test_a_bad_worker_access_is_refused_and_nothing_is_written(
    queen: QueenProcess, sshd: SshServer, tmp_path: Path
) -> None:
    body = sshd.node_body("n1", tmp_path / "install", accept_new_host_key=True)
    with queen.client() as c:
        r = c.post("/v2/registry/beehives/add", json={**body, "worker_access": "udp"})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "INVALID_REQUEST"
        assert [f["field"] for f in error["details"]["fields"]] == ["worker_access"]
        assert "\n" not in error["message"]
    assert nodes(queen) == {}


def test_worker_access_is_set_by_the_keeper_and_kept(
    queen: QueenProcess, sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RBEE_QUEEN_URL", queen.url)
    add = ["setup", "add-node", "--name", "n1", "--ssh-host", sshd.host]
    add += ["--ssh-port", str(sshd.port), "--ssh-user", sshd.user]
    add += ["--ssh-key", str(sshd.client_key), "--install-path", str(tmp_path / "install")]
    assert keeper([*add, "--accept-new-host-key"]) == 0
    assert nodes(queen)["n1"]["worker_access"] == "ssh"  # the default
    assert keeper(["setup", "update-node", "--name", "n1", "--worker-access", "direct"]) == 0
    assert nodes(queen)["n1"]["worker_access"] == "direct"
    with pytest.raises(SystemExit) as usage:
        keeper(["setup", "update-node", "--name", "n1", "--worker-access", "udp"])
    assert usage.value.code == 2
    assert nodes(queen)["n1"]["worker_access"] == "direct"


def test_m005_adds_the_column_to_an_older_database(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = open_database(path)
    Node.create(name="gpu1", ssh_host="h", ssh_user="u", ssh_key_path="", install_path="~/.rbee")
    db.close()
    with sqlite3.connect(path) as old:  # back to the database as it was before m005
        old.execute("ALTER TABLE nodes DROP COLUMN worker_access")
        old.execute("DELETE FROM _migrations WHERE name = 'm005_node_worker_access'")
    db = open_database(path)
    try:
        rows = db.execute_sql("SELECT name, worker_access FROM nodes").fetchall()
        assert rows == [("gpu1", "ssh")]  # nodes added before keep the SSH forward
        done = {r[0] for r in db.execute_sql("SELECT name FROM _migrations").fetchall()}
        assert "m005_node_worker_access" in done
    finally:
        db.close()


# --- the worker's second address -------------------------------------------------


def test_the_worker_refuses_a_network_address_without_its_token(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    argv = [sys.executable, "-m", "rbee_worker", "--worker-id", "w1"]
    argv += ["--model", str(tiny_model_dir), "--direct-host", "127.0.0.2"]
    env = {k: v for k, v in os.environ.items() if k != "RBEE_WORKER_TOKEN"}
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "--direct-host needs RBEE_WORKER_TOKEN" in proc.stderr
    bad = subprocess.run([*argv[:-1], "gpu1.lab"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--direct-host must be an IP address" in bad.stderr


# --- over real test hosts ----------------------------------------------------------


@pytest.fixture
def fleet(testbed: Testbed, rbee_home: Path, tiny_model_dir: Path) -> tuple[QueenProcess, Path]:
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0 or probe.stdout.strip() != str(sys.version_info[:2]):
        pytest.skip(f"{SYSTEM_PYTHON} is not this python version: no worker can run there")
    shutil.copy(testbed.known_hosts, rbee_home / "known_hosts")
    for host in testbed.hosts[2:4]:
        model = Path(host.home) / "models" / "tiny-llama"
        if not model.exists():
            shutil.copytree(tiny_model_dir, model)
            subprocess.run(["chmod", "-R", "a+rX", str(Path(host.home) / "models")], check=True)
    return start_queen(rbee_home), Path("models") / "tiny-llama"


def add_host(queen: QueenProcess, testbed: Testbed, host: TestHost, access: str) -> Path:
    body = {
        "node_name": host.hostname,
        "ssh_host": host.address,
        "ssh_user": host.user,
        "ssh_key_path": str(testbed.client_key),
        "install_path": "~/.rbee",
        "worker_python": worker_python_on(host),
        "worker_access": access,
    }
    assert queen.add_node(body)["worker_access"] == access
    return Path(host.home) / "models" / "tiny-llama"


def connects(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=2).close()
    except OSError:
        return False
    return True


def test_a_direct_node_is_called_on_its_address_with_the_token(
    fleet: tuple[QueenProcess, Path], testbed: Testbed
) -> None:
    queen, _ = fleet
    host = testbed.hosts[2]
    try:
        model = add_host(queen, testbed, host, "direct")
        events = run_task(queen, model, host.hostname, temperature=0, max_tokens=6)
        assert events[-1]["type"] == "end" and events[-1]["tokens_out"] == 6
        worker = the_worker(queen)
        # Called on the node's address and the worker's own port: no forward.
        assert worker["url"] == f"http://{host.address}:{worker['port']}"
        with httpx.Client(base_url=worker["url"], timeout=10) as direct:
            assert direct.get("/health").status_code == 200  # public, as on loopback
            anonymous = direct.post("/v1/inference", json={"job_id": "x", "prompt": "hi"})
            assert anonymous.status_code == 401
            assert anonymous.json()["error"]["code"] == "MISSING_API_KEY"
            wrong = {"Authorization": "Bearer not-the-token"}
            guessed = direct.delete("/v1/inference/x", headers=wrong)
            assert guessed.status_code == 401
            assert guessed.json()["error"]["code"] == "INVALID_API_KEY"
        # Greedy: the same text again, from the same worker.
        again = run_task(queen, model, host.hostname, temperature=0, max_tokens=6)
        assert text_of(again) == text_of(events)
        assert the_worker(queen)["worker_id"] == worker["worker_id"]
    finally:
        stop_queen(queen)
    assert not connects(host.address, worker["port"])  # stopped with the queen


def test_an_ssh_node_keeps_its_worker_off_the_network(
    fleet: tuple[QueenProcess, Path], testbed: Testbed
) -> None:
    queen, _ = fleet
    host = testbed.hosts[3]
    try:
        model = add_host(queen, testbed, host, "ssh")
        events = run_task(queen, model, host.hostname, temperature=0, max_tokens=3)
        assert events[-1]["type"] == "end"
        worker = the_worker(queen)
        assert worker["url"].startswith("http://127.0.0.1:")  # the forward's local end
        assert not connects(host.address, worker["port"])  # loopback on the node only
    finally:
        stop_queen(queen)


def test_a_direct_node_cut_mid_stream_ends_the_stream_within_seconds(
    fleet: tuple[QueenProcess, Path], testbed: Testbed
) -> None:
    """No SSH channel carries a direct node's stream: TCP keepalives on the
    queen's connection to the worker notice the dead link (about 8 s), and the
    client gets NODE_UNREACHABLE instead of a stream that hangs."""
    queen, _ = fleet
    host = testbed.hosts[3]
    try:
        model = add_host(queen, testbed, host, "direct")
        assert run_task(queen, model, host.hostname, max_tokens=2)[-1]["type"] == "end"
        stream = Streaming(queen, model, max_tokens=2048, temperature=0, node=host.hostname)
        assert stream.first_token.wait(30)
        host.set_link(up=False)
        cut = time.monotonic()
        stream.join(40)
        assert stream.ended_at is not None, "the stream hung after the link went down"
        assert stream.ended_at - cut < 30
        assert stream.events[-1]["type"] == "error", stream.events[-1]
        assert stream.events[-1]["code"] == "NODE_UNREACHABLE", stream.events[-1]
        assert not any(e["type"] == "end" for e in stream.events)
    finally:
        host.set_link(up=True)
        stop_queen(queen)
