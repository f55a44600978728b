"""Finding worker processes on this machine (the loopback node) by their argv."""

from __future__ import annotations

from pathlib import Path


def worker_pids(worker_id: str | None = None, under: str | None = None) -> list[int]:
    """PIDs of live rbee_worker processes: the given worker's, or those whose
    argv names a path under `under` (a test's own install path), or all."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z" or b"rbee_worker" not in argv:
            continue
        if worker_id is not None and worker_id.encode() not in argv:
            continue
        if under is not None and not any(a.startswith(under.encode()) for a in argv):
            continue
        pids.append(int(proc.name))
    return pids
