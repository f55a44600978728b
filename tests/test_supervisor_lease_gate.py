"""The supervisor's lease gate: a round looks after the workers of the nodes
this queen drives and leaves the others' alone.

In process, with the queen's own wiring (`services.supervisor_for`) and real
collaborators: the worker core, a SQLite store, two queens' leases on it, the
loopback sshd as both nodes (each with its own install path, so its own run
folder and helper), real processes standing for the workers (`sleep`; the
helper reads their pid files) and a real HTTP server answering each worker's
`/health`. Node n1 is this queen's; n2 is held by another queen. Without the
gate the round would health-check n2's workers, fail and restart the one whose
process is gone, and stop the idle one.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rbee_queen.audit import AuditLog
from rbee_queen.config import QueenConfig
from rbee_queen.errors import NodeHeldElsewhere
from rbee_queen.fleet.known_hosts import HostKeyStore
from rbee_queen.fleet.pool import SessionPool
from rbee_queen.nodes.inventory import NodeInventory, NodeSpec
from rbee_queen.nodes.lease import LeaseSettings, NodeLeases
from rbee_queen.services import supervisor_for
from rbee_queen.store.db import open_database
from rbee_queen.store.tables import Node, Worker, WorkerEvent
from rbee_queen.workers.core import WorkerCore
from rbee_queen.workers.live import LiveWorker
from rbee_queen.workers.supervisor import Supervisor
from tests.plugins.sshd import SshServer

ELSEWHERE = ("w-n2-healthy", "w-n2-gone")


class HealthServer:
    """A worker's HTTP side: answers /health with 200 and counts the calls."""

    def __init__(self) -> None:
        self.calls = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.calls += 1
                self.send_response(200 if self.path == "/health" else 404)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.httpd.server_address[1])
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def stand_in() -> Iterator[subprocess.Popen[bytes]]:
    """A real process for the helper to find alive under the workers' pid files."""
    proc = subprocess.Popen(["sleep", "120"])
    yield proc
    proc.kill()
    proc.wait()


def pid_file(install: Path, worker_id: str, pid: int) -> None:
    """What the helper's spawn writes (remote/rbee_hive/processes.py)."""
    run = install / "run"
    run.mkdir(parents=True, exist_ok=True)
    (run / f"{worker_id}.pid").write_text(json.dumps({"pid": pid, "start_ticks": None}))


def live_worker(core: WorkerCore, worker_id: str, node: str, health: HealthServer) -> LiveWorker:
    Worker.create(worker_id=worker_id, node=node, model_ref="file:/m", state="idle", pid=1)
    live = LiveWorker(worker_id, node, "file:/m", health.port, health.port)
    core.registry.add(live)
    return live


async def held_here_and_elsewhere(
    inventory: NodeInventory, sshd: SshServer, tmp_path: Path
) -> NodeLeases:
    """n1 added for real and driven by this queen; n2 the same sshd under
    another install path, its lease the other queen's. This queen's leases."""
    n1 = sshd.node_body("n1", tmp_path / "n1", accept_new_host_key=True)
    await inventory.add(NodeSpec.parse(n1))
    n2 = {**Node.get_by_id("n1").__data__, "name": "n2", "install_path": str(tmp_path / "n2")}
    Node.create(**n2)
    here = NodeLeases(LeaseSettings("queen-a"))
    assert NodeLeases(LeaseSettings("queen-b")).acquire("n2")
    await here.ensure("n1")
    with pytest.raises(NodeHeldElsewhere):
        await here.ensure("n2")
    return here


def worker_core(
    rbee_home: Path, inventory: NodeInventory, leases: NodeLeases, events: list[dict[str, Any]]
) -> tuple[WorkerCore, Supervisor]:
    """The queen's worker core and its supervisor as services.py wires them,
    with an idle stop after a millisecond."""
    config = dataclasses.replace(QueenConfig.from_env(home=rbee_home), idle_stop_s=0.001)
    core = WorkerCore.build(
        config,
        inventory,
        publish=events.append,
        on_transition=lambda *change: None,
        audit=AuditLog(rbee_home / "audit"),
        model_dir=lambda node, ref: None,
        leases=leases,
    )
    return core, supervisor_for(config, core, leases)  # the queen's own wiring of the gate


async def test_a_round_checks_the_workers_of_held_nodes_only(
    rbee_home: Path, sshd: SshServer, tmp_path: Path, stand_in: subprocess.Popen[bytes]
) -> None:
    db = open_database(tmp_path / "queen.db")
    pool = SessionPool(HostKeyStore(rbee_home / "known_hosts"), 5.0)
    inventory = NodeInventory(pool)
    events: list[dict[str, Any]] = []
    core, supervisor = worker_core(
        rbee_home, inventory, await held_here_and_elsewhere(inventory, sshd, tmp_path), events
    )
    servers = {name: HealthServer() for name in ("w-n1", *ELSEWHERE)}
    try:
        busy = live_worker(core, "w-n1", "n1", servers["w-n1"])
        core.registry.claim(busy, "job-1")  # a stream in flight: not idle, so not stopped
        pid_file(tmp_path / "n1", "w-n1", stand_in.pid)
        for worker_id in ELSEWHERE:
            live_worker(core, worker_id, "n2", servers[worker_id])
        pid_file(tmp_path / "n2", "w-n2-healthy", stand_in.pid)  # idle past idle_stop_s
        # w-n2-gone has no pid file: its process is gone, as the helper would say.

        await supervisor.check_all()

        assert servers["w-n1"].calls == 1  # held: asked the helper, then /health
        assert [servers[w].calls for w in ELSEWHERE] == [0, 0]  # never health-checked
        assert pool.peek("n2") is None  # no SSH session to the other queen's node
        elsewhere = Worker.select().where(Worker.worker_id.in_(ELSEWHERE))
        assert [w.state for w in elsewhere] == ["idle", "idle"]
        # Nothing failed, restarted or stopped there: no history, no event, still live.
        assert WorkerEvent.select().where(WorkerEvent.worker_id.in_(ELSEWHERE)).count() == 0
        assert [e for e in events if e.get("worker_id") in ELSEWHERE] == []
        assert set(core.registry.live) == {"w-n1", *ELSEWHERE}
        assert stand_in.poll() is None  # no stop signalled its process
    finally:
        for server in servers.values():
            server.close()
        await core.aclose()
        await pool.close_all()
        db.close()
