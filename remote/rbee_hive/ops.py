"""The operations the helper answers. Each returns JSON-ready data."""

from __future__ import annotations

import os
import platform
import shutil
import sys
from typing import Any

from rbee_hive import gpus, processes
from rbee_hive.errors import OpError

__all__ = ["OpError"]  # re-exported: the other op modules raise it from here


def probe(install_path: str = ".") -> dict[str, Any]:
    cards, gpu_source = gpus.query_gpus()
    disk_root = install_path if os.path.isdir(install_path) else os.path.expanduser("~")
    disk = shutil.disk_usage(disk_root)
    backends = ["cpu"] + (["cuda"] if cards else [])
    return {
        "hostname": platform.node(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "cpus": os.cpu_count() or 1,
        "ram_total_bytes": _meminfo("MemTotal"),
        "ram_available_bytes": _meminfo("MemAvailable"),
        "disk_free_bytes": disk.free,
        "gpus": cards,
        "gpu_source": gpu_source,
        "install_writable": _writable(install_path),
        "disk_total_bytes": disk.total,
        "backends": backends,
        "devices": {"cpu": 1, "cuda": len(cards)},
    }


def _writable(path: str) -> bool:
    """Whether files can be created under `path` (or, if it does not exist yet,
    under its nearest existing parent, where it would be created)."""
    path = os.path.abspath(os.path.expanduser(path))
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return os.access(path, os.W_OK | os.X_OK)


def _meminfo(field: str) -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def path_info(path: str) -> dict[str, Any]:
    real = os.path.realpath(os.path.expanduser(path))
    return {
        "path": real,
        "exists": os.path.exists(real),
        "is_dir": os.path.isdir(real),
        "entries": sorted(os.listdir(real))[:200] if os.path.isdir(real) else [],
    }


def spawn_worker(
    worker_id: str,
    run_dir: str,
    argv: list[str],
    pythonpath: str,
    env: dict[str, str] | None = None,
    memory_limit_bytes: int | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    if not processes.valid_worker_id(worker_id):
        raise OpError("INVALID_REQUEST", "invalid worker id")
    if not argv or not all(isinstance(a, str) for a in argv):
        raise OpError("INVALID_REQUEST", "argv must be a non-empty list of strings")
    try:
        return processes.spawn(
            worker_id,
            run_dir,
            argv,
            pythonpath,
            env or {},
            int(memory_limit_bytes or 0),
            device or "cpu",
        )
    except FileNotFoundError as exc:
        raise OpError("BACKEND_UNAVAILABLE", f"cannot start {argv[0]}: {exc.strerror}") from exc


def worker_status(worker_id: str, run_dir: str) -> dict[str, Any]:
    return processes.status(worker_id, run_dir)


def stop_worker(worker_id: str, run_dir: str, grace_s: float = 10.0) -> dict[str, Any]:
    return processes.stop(worker_id, run_dir, grace_s)


def list_workers(run_dir: str) -> dict[str, Any]:
    return {"workers": processes.list_all(run_dir)}


def log_tail(worker_id: str, run_dir: str, lines: int = 50) -> dict[str, Any]:
    return {"lines": processes.log_tail(worker_id, run_dir, lines)}
