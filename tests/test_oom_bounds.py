"""The memory bound's size (setting, estimate, raised past an OOM) and the
helper's fallback to RLIMIT_AS where no memory cgroup can be written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rbee_hive import cgroups
from rbee_queen.workers.oom import oom_of
from rbee_queen.workers.resources import MIB, RUNTIME_RAM_BYTES, memory_limit

GIB = 1024 * MIB


def test_the_default_bound_is_the_ram_estimate_plus_the_runtime() -> None:
    assert memory_limit(GIB, "cpu") == int(GIB * 1.2) + RUNTIME_RAM_BYTES["cpu"]
    assert memory_limit(GIB, "cuda:0") == int(GIB * 1.2) + RUNTIME_RAM_BYTES["cuda"]
    assert memory_limit(GIB, "cpu", setting_mib=300) == 300 * MIB
    assert memory_limit(GIB, "cpu", setting_mib=-1) == 0


def test_a_raised_bound_is_a_floor_under_the_setting() -> None:
    # the raise itself, kept in the database: test_memory_bounds.py
    assert memory_limit(GIB, "cpu", setting_mib=1, raised_bytes=150) == MIB  # never lower
    assert memory_limit(GIB, "cpu", setting_mib=1, raised_bytes=3 * MIB) == 3 * MIB


def test_only_a_dead_worker_with_a_counted_kill_is_an_oom() -> None:
    report = {"oom_kills": 1, "limit_bytes": 1, "peak_bytes": 1}
    dead = {"known": True, "alive": False, "pid": 1, "port": None}
    assert oom_of({**dead, "oom": report}) == report  # type: ignore[typeddict-item]
    assert oom_of(dead) is None  # a SIGKILL alone says nothing
    assert oom_of({**dead, "alive": True, "oom": report}) is None  # type: ignore[typeddict-item]


def test_without_a_writable_cgroup_a_cpu_worker_gets_an_address_space_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cgroups, "_mounts", dict)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        bound = cgroups.bound("w-test", child.pid, 512 * MIB, "cpu")
        assert bound == {"kind": "rlimit_as", "limit_bytes": 512 * MIB}
        limits = Path(f"/proc/{child.pid}/limits").read_text()
        (line,) = [x for x in limits.splitlines() if x.startswith("Max address space")]
        assert line.split()[3:5] == [str(512 * MIB)] * 2
        cuda = cgroups.bound("w-test", child.pid, 512 * MIB, "cuda:0")
        assert cuda["kind"] == "none" and "CUDA" in cuda["reason"]
    finally:
        child.kill()
        child.wait()
