"""The processes bench.relay starts besides the queen and sshd: the worker, the
SSH client's port forward and the relays that only copy bytes; the pinning
of processes to CPUs; and what the queen's process costs per request, in CPU
time and (under valgrind's callgrind) in instructions, which a loaded machine
does not distort the way it does wall-clock time."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
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


def pin_all(
    mode: str,
    cpus: set[int],
    workers: list[int],
    node_side: list[int],
    queen_pid: int,
    relay_pids: list[int],
) -> None:
    """Pins as `--pin` says (see the module's docstring): one CPU for the
    workers (with the node side or the clients as asked), the others for the rest."""
    first = [*workers, *node_side] if mode == "node" else workers
    rest = [queen_pid, *relay_pids]
    (first if mode == "clients" else rest).append(os.getpid())
    rest += [p for p in node_side if p not in first]
    pin(rest, cpus - {min(cpus)})
    pin(first, {min(cpus)})
    what = {"node": "the node side (workers, sshd)", "clients": "workers and clients"}.get(
        mode, "workers"
    )
    print(f"{what} pinned to CPU {min(cpus)}, the rest to {sorted(cpus - {min(cpus)})}")


def start_shipped_queen(
    home: Path, module: tuple[str, ...] = ("rbee_queen",), prefix: tuple[str, ...] = ()
) -> QueenProcess:
    """A queen as a user runs it (`module`: `bench.hop_trace queen` to trace
    it). The tests' start_queen turns on the check of every relayed event
    against its definition (RBEE_CHECK_MESSAGES), a cost per chunk that a
    shipped queen does not pay: measured with it, the relay
    looked about a tenth of its own CPU slower (py-spy)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RBEE_CHECK_MESSAGES"}
    if prefix:  # counted: no health rounds or worker checks at random moments
        env |= {"RBEE_HEALTH_INTERVAL": "0", "RBEE_SUPERVISOR_INTERVAL": "0"}
    with open(home / "queen-test.log", "ab") as log:
        argv = [*prefix, sys.executable, "-m", *module, "--port", str(port)]
        proc = subprocess.Popen(
            argv, env={**env, "RBEE_HOME": str(home)}, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + (600 if prefix else 20)  # valgrind starts it slowly
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=0.5).status_code == 200:
                return QueenProcess(url, home, proc)
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"the queen did not start: {(home / 'queen-test.log').read_text()}")


def spawn_worker(
    model: Path, run_dir: Path, slots: int, module: tuple[str, ...] = ("rbee_worker",)
) -> tuple[subprocess.Popen[bytes], int]:
    state = run_dir / "bench.state.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RBEE_WORKER_TOKEN": "bench-token-0123456789"}
    argv = [sys.executable, "-m", *module, "--worker-id", "bench", "--model", str(model)]
    argv += ["--slots", str(slots), "--state-file", str(state)]
    log = (run_dir / "bench.log").open("wb")
    # In a session of its own, as the helper starts the queen's workers: with
    # the kernel's autogroups each session is scheduled as one, so a worker in
    # this process's session would share its CPU time on other terms.
    proc = subprocess.Popen(
        argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
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


def cpu_seconds(pid: int) -> float:
    """CPU time of all of a process's threads so far (the scheduler's own
    count, in nanoseconds: finer than the clock ticks of /proc/PID/stat)."""
    total = 0
    for tid in _threads(pid):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                total += int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # exited meanwhile
    return total / 1e9


def callgrind_prefix(out_dir: Path) -> tuple[str, ...]:
    """A queen under callgrind, counting nothing until `instructions` asks."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    out = f"--callgrind-out-file={out_dir}/callgrind.%p"
    return ("valgrind", "--tool=callgrind", "--instr-atstart=no", out)


def instructions(pid: int, out_dir: Path, call: Callable[[], object], runs: int) -> int:
    """Instructions the process ran for `runs` calls, less what it ran on its
    own (health rounds, timers) in as long a time with no calls."""
    took, counted = _counted(pid, out_dir, call, runs)
    _, idle = _counted(pid, out_dir, lambda: time.sleep(took / runs), runs)
    return counted - idle


def _counted(pid: int, out_dir: Path, call: Callable[[], object], runs: int) -> tuple[float, int]:
    """Seconds and instructions for `runs` calls: counting on, the calls,
    counting off, and a dump of what was counted since the last one."""
    control = ["callgrind_control"]
    subprocess.run([*control, "-i", "on", str(pid)], check=True, capture_output=True)
    started = time.monotonic()
    for _ in range(runs):
        call()
    took = time.monotonic() - started
    subprocess.run([*control, "-i", "off", str(pid)], check=True, capture_output=True)
    before = set(out_dir.glob(f"callgrind.{pid}.*"))
    subprocess.run([*control, "-d", str(pid)], check=True, capture_output=True)
    while not (new := set(out_dir.glob(f"callgrind.{pid}.*")) - before):
        time.sleep(0.1)
    (dump,) = new
    time.sleep(0.5)  # written whole
    totals = [line for line in dump.read_text().splitlines() if line.startswith("totals:")]
    return took, int(totals[0].split()[1])
