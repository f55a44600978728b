"""A memory bound for one worker, and whether the kernel's OOM killer ended it.

Tried in order: a cgroup v2 memory group below this helper's own group (where
that group is delegated to the login: writable, with the memory controller
enabled for its children), a cgroup v1 memory group below this helper's own
(where the hierarchy is writable, as for root), else RLIMIT_AS on the process
(CPU workers only: CUDA maps far more address space than it uses). The OOM
verdict comes from the group's own counter (`memory.events` oom_kill on v2,
`memory.oom_control` oom_kill on v1), never from a SIGKILL alone; a process
limit has no such counter, so under it an OOM shows as the worker's own
MemoryError.
"""

from __future__ import annotations

import os
import resource
from typing import Any

GROUP_PREFIX = "rbee-"


def _mounts() -> dict[str, str]:
    """The cgroup v2 mount ('v2') and the v1 memory hierarchy ('v1'), where mounted."""
    found: dict[str, str] = {}
    try:
        with open("/proc/self/mountinfo") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return found
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, extra = left.split(), right.split()
        if len(fields) < 5 or len(extra) < 3:
            continue
        if extra[0] == "cgroup2":
            found.setdefault("v2", fields[4])
        elif extra[0] == "cgroup" and "memory" in extra[2].split(","):
            found.setdefault("v1", fields[4])
    return found


def _own_group(version: str) -> str | None:
    """This process's group path in the v2 hierarchy or the v1 memory one."""
    try:
        with open("/proc/self/cgroup") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if version == "v2" and controllers == "" and line.startswith("0:"):
            return path
        if version == "v1" and "memory" in controllers.split(","):
            return path
    return None


def _parent_dir(version: str, mount: str) -> str | None:
    own = _own_group(version)
    if own is None:
        return None
    parent = os.path.join(mount, own.lstrip("/"))
    if not os.access(parent, os.W_OK):
        return None
    if version == "v2" and "memory" not in _read(os.path.join(parent, "cgroup.subtree_control")):
        return None  # not delegated with the memory controller for children
    return parent


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""


def _write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


def bound(worker_id: str, pid: int, limit_bytes: int, device: str) -> dict[str, Any]:
    """Put `pid` under a memory limit; say how (`kind`: cgroup_v2, cgroup_v1,
    rlimit_as or none, and why none)."""
    mounts = _mounts()
    for version, limit_file in (("v2", "memory.max"), ("v1", "memory.limit_in_bytes")):
        mount = mounts.get(version)
        parent = _parent_dir(version, mount) if mount else None
        if parent is None:
            continue
        group = os.path.join(parent, GROUP_PREFIX + worker_id)
        try:
            remove(group)  # one left by an earlier worker of this id
            os.mkdir(group, 0o755)
            _write(os.path.join(group, limit_file), str(limit_bytes))
            swap = os.path.join(group, "memory.swap.max")
            if version == "v2" and os.path.exists(swap):  # absent without swap accounting
                _write(swap, "0")  # an OOM, not a worker slowed to a crawl in swap
            _write(os.path.join(group, "cgroup.procs"), str(pid))
        except OSError as exc:
            remove(group)
            return {"kind": "none", "reason": f"{version} group: {exc.strerror}"}
        return {"kind": f"cgroup_{version}", "group": group, "limit_bytes": limit_bytes}
    if device.startswith("cuda"):
        return {"kind": "none", "reason": "no writable memory cgroup; a CUDA worker gets no rlimit"}
    try:
        resource.prlimit(pid, resource.RLIMIT_AS, (limit_bytes, limit_bytes))
    except OSError as exc:
        return {"kind": "none", "reason": f"rlimit: {exc.strerror}"}
    return {"kind": "rlimit_as", "limit_bytes": limit_bytes}


def _counter(text: str, name: str) -> int:
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == name and value.strip().isdigit():
            return int(value)
    return 0


def _number(path: str) -> int | None:
    text = _read(path).strip()
    return int(text) if text.isdigit() else None


def oom_report(group: str) -> dict[str, Any] | None:
    """The group's OOM kills and memory figures, or None when it recorded none."""
    if os.path.exists(os.path.join(group, "memory.events")):
        kills = _counter(_read(os.path.join(group, "memory.events")), "oom_kill")
        limit = _number(os.path.join(group, "memory.max"))
        peak = _number(os.path.join(group, "memory.peak"))
    else:
        kills = _counter(_read(os.path.join(group, "memory.oom_control")), "oom_kill")
        limit = _number(os.path.join(group, "memory.limit_in_bytes"))
        peak = _number(os.path.join(group, "memory.max_usage_in_bytes"))
    if kills == 0:
        return None
    return {"oom_kills": kills, "limit_bytes": limit, "peak_bytes": peak}


def remove(group: str) -> None:
    """Remove an empty group (a dead worker's); a missing one is fine."""
    if not os.path.basename(group).startswith(GROUP_PREFIX):
        return
    try:
        os.rmdir(group)
    except FileNotFoundError:
        pass
    except OSError:
        pass  # still holds a process: the next spawn of this id tries again
