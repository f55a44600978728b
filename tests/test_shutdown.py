"""Bounded shutdown: a queen stopped (SIGTERM) with 4 workers, one of them frozen
(SIGSTOP) with a stream in flight, is gone within 30 s with every worker
process gone: the three answer SIGTERM, the frozen one is SIGKILLed after the
grace period, and the queen's log counts each outcome."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from tests.plugins.procs import worker_pids
from tests.plugins.queen import start_queen
from tests.plugins.sshd import SshServer

NODES = ("a", "b", "c", "d")
BOUND_S = 30


def test_a_queen_with_a_frozen_worker_stops_within_the_bound(
    rbee_home: Path, sshd: SshServer, tiny_model_dir: Path
) -> None:
    queen = start_queen(rbee_home)
    try:
        for name in NODES:
            queen.add_node(sshd.node_body(name, rbee_home / name, accept_new_host_key=True))

        def warm(node: str) -> None:
            body = {
                "node": node,
                "model": f"file:{tiny_model_dir}",
                "prompt": "Hi",
                "max_tokens": 2,
            }
            with queen.client() as c:
                assert c.post("/v2/tasks", json=body).status_code == 200

        starts = [threading.Thread(target=warm, args=(n,)) for n in NODES]
        for t in starts:
            t.start()
        for t in starts:
            t.join(120)
        pids = {n: worker_pids(under=str(rbee_home / n)) for n in NODES}
        assert all(len(p) == 1 for p in pids.values()), pids

        with queen.client() as c:
            body = {
                "node": "a",
                "model": f"file:{tiny_model_dir}",
                "prompt": "Hi",
                "max_tokens": 512,
            }
            with c.stream("POST", "/v2/tasks", json=body) as held:
                next(held.iter_lines())  # the stream is in flight
                os.kill(pids["a"][0], signal.SIGSTOP)
                started = time.monotonic()
                queen.proc.send_signal(signal.SIGTERM)
                queen.proc.wait(timeout=BOUND_S)
                took = time.monotonic() - started
        left = worker_pids(under=str(rbee_home))
    except (subprocess.TimeoutExpired, AssertionError):
        queen.proc.kill()
        raise
    finally:
        for pid in worker_pids(under=str(rbee_home)):  # never leave one behind
            os.kill(pid, signal.SIGKILL)
    assert took < BOUND_S
    assert left == []
    assert "stopped workers: 3 graceful, 1 forced, 0 failed" in queen.log
    assert "stopping 4 worker(s) took" in queen.log
    print(f"queen gone {took:.1f} s after SIGTERM")
