"""The processes bench.relay starts besides the queen and sshd: the worker, the
SSH client's port forward and the relays that only copy bytes; and the pinning
of processes to CPUs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.plugins.queen import QueenProcess
from tests.plugins.sshd import SshServer, free_port


def _threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return []


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def pin(pids: list[int], cpus: set[int]) -> None:
    """Every thread of each process (a process's affinity is per thread)."""
    for pid in pids:
        for tid in _threads(pid):
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:
                pass  # exited meanwhile


def start_shipped_queen(home: Path) -> QueenProcess:
    """A queen as a user runs it. The tests' start_queen turns on the check of
    every relayed event against its definition (RBEE_CHECK_MESSAGES), a cost
    per chunk that a shipped queen does not pay: measured with it, the relay
    looked about a tenth of its own CPU slower (py-spy)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RBEE_CHECK_MESSAGES"}
    with open(home / "queen-test.log", "ab") as log:
        argv = [sys.executable, "-m", "rbee_queen", "--port", str(port)]
        proc = subprocess.Popen(
            argv, env={**env, "RBEE_HOME": str(home)}, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=0.5).status_code == 200:
                return QueenProcess(url, home, proc)
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"the queen did not start: {(home / 'queen-test.log').read_text()}")


def spawn_worker(model: Path, run_dir: Path, slots: int) -> tuple[subprocess.Popen[bytes], int]:
    state = run_dir / "bench.state.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RBEE_WORKER_TOKEN": "bench-token-0123456789"}
    argv = [sys.executable, "-m", "rbee_worker", "--worker-id", "bench", "--model", str(model)]
    argv += ["--slots", str(slots), "--state-file", str(state)]
    log = (run_dir / "bench.log").open("wb")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    while not state.exists():
        time.sleep(0.05)
    port = json.loads(state.read_text())["port"]
    while httpx.get(f"http://127.0.0.1:{port}/health").status_code != 200:
        time.sleep(0.1)
    return proc, port


def forward(sshd: SshServer, port: int) -> tuple[subprocess.Popen[bytes], int]:
    """An OpenSSH client forward to the worker, in its own process: an asyncssh
    loop in a thread of this process would contend with the clients for the GIL
    and measure that instead of the forward."""
    local = free_port()
    argv = ["ssh", "-N", "-p", str(sshd.port), "-i", str(sshd.client_key)]
    argv += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    argv += ["-o", "LogLevel=ERROR", "-L", f"127.0.0.1:{local}:127.0.0.1:{port}"]
    return _listening(subprocess.Popen([*argv, f"{sshd.user}@{sshd.host}"]), local)


def byte_relay(port: int) -> tuple[subprocess.Popen[bytes], int]:
    """One more hop that only copies bytes: bench/byte_relay.py (Python, uvloop)."""
    local = free_port()
    argv = [sys.executable, "-m", "bench.byte_relay", str(local), str(port)]
    return _listening(subprocess.Popen(argv), local)


def socat_relay(port: int) -> tuple[subprocess.Popen[bytes], int] | None:
    """The same in C, where socat is installed (it is not an rbee dependency)."""
    if shutil.which("socat") is None:
        return None
    local = free_port()
    argv = ["socat", f"TCP-LISTEN:{local},bind=127.0.0.1,reuseaddr,fork,nodelay"]
    argv.append(f"TCP:127.0.0.1:{port},nodelay")
    return _listening(subprocess.Popen(argv), local)


def _listening(proc: subprocess.Popen[bytes], port: int) -> tuple[subprocess.Popen[bytes], int]:
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
