"""Detached worker processes and their files on the node.

Layout under run_dir, one set per worker id:
  <id>.pid         JSON: pid, start ticks (to tell a reused pid), argv, started_at
  <id>.log         the worker's stdout and stderr
  <id>.state.json  written by the worker once it listens: its port

A worker runs in its own session (setsid), so it outlives this helper and the
SSH session, and a stop signals its whole process group.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from typing import Any

from rbee_hive import cgroups

_WORKER_ID = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
# Children of this helper, kept so they are reaped (a zombie still answers kill 0).
_children: dict[int, subprocess.Popen[bytes]] = {}


def valid_worker_id(worker_id: str) -> bool:
    return bool(_WORKER_ID.match(worker_id))


def _paths(worker_id: str, run_dir: str) -> dict[str, str]:
    base = os.path.join(os.path.expanduser(run_dir), worker_id)
    return {"pid": base + ".pid", "log": base + ".log", "state": base + ".state.json"}


def _start_ticks(pid: int) -> int | None:
    """Process start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def _alive(pid: int, start_ticks: int | None) -> bool:
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        _children.pop(pid, None)
        return False
    ticks = _start_ticks(pid)
    if ticks is None:
        return False
    return start_ticks is None or ticks == start_ticks


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


# The worker's token arrives in the spawn request's env under TOKEN_ENV and
# reaches the worker as a file named by TOKEN_FILE_ENV (rbee_worker.auth).
TOKEN_ENV = "RBEE_WORKER_TOKEN"
TOKEN_FILE_ENV = "RBEE_WORKER_TOKEN_FILE"


def _write_token(run_dir: str, worker_id: str, token: str) -> str:
    path = os.path.join(run_dir, f"{worker_id}.token")
    if os.path.lexists(path):
        os.remove(path)  # left by a worker that never started
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)
    return path


def spawn(
    worker_id: str,
    run_dir: str,
    argv: list[str],
    pythonpath: str,
    env: dict[str, str],
    memory_limit_bytes: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    run_dir = os.path.expanduser(run_dir)
    os.makedirs(run_dir, mode=0o700, exist_ok=True)
    paths = _paths(worker_id, run_dir)
    existing = _read_json(paths["pid"])
    if existing and _alive(existing["pid"], existing.get("start_ticks")):
        return {"pid": existing["pid"], "already_running": True, "log_file": paths["log"]}
    for stale in (paths["state"],):
        if os.path.exists(stale):
            os.remove(stale)
    child_env = {**os.environ, **env, "PYTHONPATH": pythonpath, "PYTHONUNBUFFERED": "1"}
    token = child_env.pop(TOKEN_ENV, None)
    if token:
        # Not in the environment, which /proc/<pid>/environ shows for the
        # process's whole life: a 0600 file the worker deletes once read.
        child_env[TOKEN_FILE_ENV] = _write_token(run_dir, worker_id, token)
    full_argv = [*argv, "--state-file", paths["state"]]
    with open(paths["log"], "ab") as log:
        proc = subprocess.Popen(
            full_argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env,
            cwd=run_dir,
            start_new_session=True,
            close_fds=True,
        )
    _children[proc.pid] = proc
    # Bound at once: the worker's python is still starting, well before the model loads.
    memory = (
        cgroups.bound(worker_id, proc.pid, memory_limit_bytes, device)
        if memory_limit_bytes > 0
        else {"kind": "none", "reason": "no limit asked for"}
    )
    record = {
        "pid": proc.pid,
        "start_ticks": _start_ticks(proc.pid),
        "argv": full_argv,
        "started_at": time.time(),
        "memory": memory,
    }
    _write_json(paths["pid"], record)
    return {
        "pid": proc.pid,
        "already_running": False,
        "log_file": paths["log"],
        "memory_bound": memory,
    }


def status(worker_id: str, run_dir: str) -> dict[str, Any]:
    paths = _paths(worker_id, run_dir)
    record = _read_json(paths["pid"])
    if record is None:
        return {"known": False, "alive": False, "pid": None, "port": None}
    state = _read_json(paths["state"]) or {}
    alive = _alive(record["pid"], record.get("start_ticks"))
    result = {
        "known": True,
        "alive": alive,
        "pid": record["pid"],
        "port": state.get("port") if alive else None,
        "started_at": record.get("started_at"),
    }
    group = (record.get("memory") or {}).get("group")
    if group and not alive:
        oom = cgroups.oom_report(group)
        if oom is not None:
            result["oom"] = oom
    return result


def stop(worker_id: str, run_dir: str, grace_s: float) -> dict[str, Any]:
    paths = _paths(worker_id, run_dir)
    record = _read_json(paths["pid"])
    if record is None:
        return {"stopped": True, "forced": False, "was_running": False}
    pid = record["pid"]
    ticks = record.get("start_ticks")
    was_running = _alive(pid, ticks)
    forced = False
    if was_running:
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while _alive(pid, ticks) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid, ticks):
            forced = True
            _signal_group(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5.0
            while _alive(pid, ticks) and time.monotonic() < deadline:
                time.sleep(0.02)
    for key in ("pid", "state"):
        try:
            os.remove(paths[key])
        except FileNotFoundError:
            pass
    group = (record.get("memory") or {}).get("group")
    if group:
        cgroups.remove(group)
    return {"stopped": not _alive(pid, ticks), "forced": forced, "was_running": was_running}


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # the worker leads its own session, so pgid == pid
    except ProcessLookupError:
        pass


def list_all(run_dir: str) -> list[dict[str, Any]]:
    run_dir = os.path.expanduser(run_dir)
    try:
        names = sorted(n[: -len(".pid")] for n in os.listdir(run_dir) if n.endswith(".pid"))
    except FileNotFoundError:
        return []
    return [{"worker_id": n, **status(n, run_dir)} for n in names if valid_worker_id(n)]


def log_tail(worker_id: str, run_dir: str, lines: int) -> list[str]:
    path = _paths(worker_id, run_dir)["log"]
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    return data.splitlines()[-max(1, min(lines, 1000)) :]
