"""The node helper, run for real: RPC framing, GPU parsing, detached processes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rbee_hive import gpus, nvml, processes, rpc

DATA = Path(__file__).parent / "data" / "nvidia-smi"


def test_parse_two_gpus() -> None:
    cards = gpus.parse_nvidia_smi((DATA / "2x-rtx3090.csv").read_text())
    assert [c["index"] for c in cards] == [0, 1]
    assert cards[1]["name"] == "NVIDIA GeForce RTX 3090"
    assert cards[1]["memory_used_mib"] == 18432
    assert cards[1]["temperature_c"] == 67
    assert cards[1]["utilization_pct"] == 98


def test_parse_not_available_fields() -> None:
    (card,) = gpus.parse_nvidia_smi((DATA / "a100-na-fields.csv").read_text())
    assert card["memory_total_mib"] == 81920
    assert card["utilization_pct"] is None


def test_rpc_serves_lines_and_reports_errors() -> None:
    requests = [
        {"id": 1, "op": "ping"},
        {"id": 2, "op": "nope"},
        {"id": 3, "op": "path_info", "args": {"path": "/"}},
        {"id": 4, "op": "path_info", "args": {"bogus": 1}},
    ]
    stdin = io.StringIO("".join(json.dumps(r) + "\n" for r in requests) + "not json\n")
    stdout = io.StringIO()
    rpc.serve(stdin, stdout)  # returns once every threaded reply is written
    replies = {r["id"]: r for r in map(json.loads, stdout.getvalue().splitlines())}
    assert replies[1]["ok"] and replies[1]["result"]["pong"]
    assert replies[2]["error"]["code"] == "UNKNOWN_OP"
    assert replies[3]["result"]["is_dir"] is True
    assert replies[4]["error"]["code"] == "INVALID_REQUEST"
    assert replies[None]["error"]["code"] == "INVALID_REQUEST"


def test_helper_runs_standalone_with_only_the_standard_library(tmp_path: Path) -> None:
    # -I -S: isolated, no site-packages. The helper must still start and probe.
    hive_root = Path(processes.__file__).parent.parent
    proc = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); from rbee_hive.rpc import serve; serve()",
            str(hive_root),
        ],
        input=json.dumps({"id": 1, "op": "probe", "args": {"install_path": str(tmp_path)}}) + "\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    reply = json.loads(proc.stdout.splitlines()[0])
    assert reply["ok"], reply
    assert reply["result"]["cpus"] >= 1
    assert reply["result"]["backends"][0] == "cpu"


SLEEPER = [sys.executable, "-c", "import time\nwhile True: time.sleep(0.05)"]
STUBBORN = [
    sys.executable,
    "-c",
    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "while True: time.sleep(0.05)",
]


def test_spawn_status_stop(tmp_path: Path) -> None:
    run = str(tmp_path / "run")
    spawned = processes.spawn("w-1", run, SLEEPER, "", {})
    pid = spawned["pid"]
    assert json.loads(Path(run, "w-1.pid").read_text())["pid"] == pid
    status = processes.status("w-1", run)
    assert status["alive"] and status["pid"] == pid
    assert os.getsid(pid) == pid  # its own session: it outlives the helper
    result = processes.stop("w-1", run, grace_s=5)
    assert result == {"stopped": True, "forced": False, "was_running": True}
    assert not processes.status("w-1", run)["alive"]
    assert not Path(run, "w-1.pid").exists()


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    run = str(tmp_path / "run")
    processes.spawn("w-2", run, STUBBORN, "", {})
    time.sleep(0.3)  # let it install its SIGTERM handler
    started = time.monotonic()
    result = processes.stop("w-2", run, grace_s=0.5)
    assert result["forced"] is True and result["stopped"] is True
    assert time.monotonic() - started < 5


def test_reused_pid_is_not_mistaken_for_the_worker(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    # A pid file naming a live process (ours) but with another start time.
    (run / "w-3.pid").write_text(json.dumps({"pid": os.getpid(), "start_ticks": 1}))
    assert processes.status("w-3", str(run))["alive"] is False


def test_log_tail(tmp_path: Path) -> None:
    run = str(tmp_path / "run")
    processes.spawn("w-4", run, [sys.executable, "-c", "print('hello from worker')"], "", {})
    deadline = time.monotonic() + 10
    while processes.status("w-4", run)["alive"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes.log_tail("w-4", run, 5) == ["hello from worker"]


def test_parse_one_h100_and_mixed_models() -> None:
    (h100,) = gpus.parse_nvidia_smi((DATA / "1x-h100.csv").read_text())
    assert h100["name"] == "NVIDIA H100 80GB HBM3" and h100["memory_total_mib"] == 81559
    mixed = gpus.parse_nvidia_smi((DATA / "mixed-4090-3060.csv").read_text())
    assert [c["name"] for c in mixed] == ["NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 3060"]
    assert mixed[0]["utilization_pct"] == 100 and mixed[1]["memory_used_mib"] == 305


def test_parse_no_devices() -> None:
    assert gpus.parse_nvidia_smi((DATA / "none.txt").read_text()) == []


def test_gpu_source_without_nvml_or_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    # This machine has no NVIDIA driver: NVML does not load and the probe says so.
    if nvml.read_gpus() is not None:
        pytest.skip("NVML is present here")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert gpus.query_gpus() == ([], "none")


def test_gpu_source_falls_back_to_nvidia_smi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if nvml.read_gpus() is not None:
        pytest.skip("NVML is present here")
    # A stand-in nvidia-smi on PATH that prints an answer in its CSV format.
    fake = tmp_path / "nvidia-smi"
    fake.write_text(f"#!/bin/sh\nexec /bin/cat {DATA / '2x-rtx3090.csv'}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    cards, source = gpus.query_gpus()
    assert source == "nvidia-smi"
    assert [c["name"] for c in cards] == ["NVIDIA GeForce RTX 3090"] * 2
