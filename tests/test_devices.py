"""Devices end to end: a request's backend/device, the engine a worker gets, and
GPU failures that reach the client with their code and never fall back to the CPU.

This machine has no GPU. Where a test needs a node that reports one, the node's
sshd puts a script first on PATH that prints an `nvidia-smi` answer written in its CSV format
(tests/data/nvidia-smi/1x-h100.csv): the helper then sees an H100, the queen
picks it, and the worker that starts on it finds CUDA missing for real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rbee_queen.workers.devices import engine_for, requested_device, serves
from tests.plugins.procs import worker_pids
from tests.plugins.queen import QueenProcess
from tests.plugins.sshd import SshServer, start_sshd

DATA = Path(__file__).parent / "data" / "nvidia-smi"


def test_request_fields_become_one_device_string() -> None:
    assert requested_device(None, None) == "cpu"
    assert requested_device("cpu", 3) == "cpu"
    assert requested_device("cuda", None) == "cuda"
    assert requested_device("cuda", 1) == "cuda:1"


def test_engine_and_matching() -> None:
    assert engine_for("cpu") == "torch"
    assert engine_for("cuda:0") == "exllamav2"
    assert serves("cuda:1", "cuda") and serves("cuda:1", "cuda:1")
    assert not serves("cuda:1", "cuda:0")
    assert not serves("cpu", "cuda") and not serves("cuda:0", "cpu")


def add_node(queen: QueenProcess, sshd: SshServer, install: Path, name: str) -> None:
    queen.add_node(sshd.node_body(name, install, accept_new_host_key=True))


def workers(queen: QueenProcess, *, stopped: bool = False) -> list[dict]:
    with queen.client() as c:
        params = {"all": "1"} if stopped else {}
        return list(c.get("/v2/workers/list", params=params).json()["workers"])


def keeper(queen: QueenProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rbee_keeper", "--queen-url", queen.url, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RBEE_HOME": str(queen.home)},
    )


def test_cuda_on_a_node_without_gpu_is_refused_before_spawning(
    queen: QueenProcess, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    add_node(queen, sshd, tmp_path / "install", "cpuonly")
    task = {"node": "cpuonly", "model": f"file:{tiny_model_dir}", "prompt": "hi"}
    with queen.client() as c:
        r = c.post("/v2/tasks", json={**task, "backend": "cuda"})
        assert r.status_code == 502, r.text
        error = r.json()["error"]
        assert error["code"] == "BACKEND_UNAVAILABLE"
        assert "no usable NVIDIA GPU" in error["message"]
        r = c.post("/v2/tasks", json={**task, "backend": "tpu"})
        assert r.status_code == 400
        assert [f["field"] for f in r.json()["error"]["details"]["fields"]] == ["backend"]
        r = c.post("/v2/tasks", json={**task, "backend": "metal"})  # no engine for it here
        assert r.status_code == 400 and "cpu, cuda" in r.text
    assert workers(queen, stopped=True) == []  # nothing was spawned or written
    done = keeper(
        queen, "infer", "--node", "cpuonly", "--model", task["model"], "--prompt", "hi",
        "--backend", "cuda",
    )  # fmt: skip
    assert done.returncode == 1
    assert "BACKEND_UNAVAILABLE" in done.stderr and "no usable NVIDIA GPU" in done.stderr


@pytest.fixture
def h100_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """A loopback node whose `nvidia-smi` answers as one H100 would."""
    root = tmp_path_factory.mktemp("h100")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvidia-smi"
    fake.write_text(f"#!/bin/sh\nexec cat {DATA / '1x-h100.csv'}\n")
    fake.chmod(0o755)
    proc, server = start_sshd(root, session_env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    try:
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_gpu_node_gets_an_exllamav2_worker_that_fails_fast_without_cuda(
    queen: QueenProcess, h100_sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    add_node(queen, h100_sshd, tmp_path / "install", "gpu")
    model = f"file:{tiny_model_dir}"
    with queen.client() as c:
        r = c.get("/v2/nodes/status", params={"node": "gpu"})
        assert r.status_code == 200, r.text
        assert "NVIDIA H100 80GB HBM3" in r.text  # the helper read that answer
        before = set(worker_pids(under=str(tmp_path / "install")))
        r = c.post(
            "/v2/tasks",
            json={"node": "gpu", "model": model, "prompt": "hi", "backend": "cuda", "device": 0},
        )
    assert r.status_code == 502, r.text
    error = r.json()["error"]
    assert error["code"] == "BACKEND_UNAVAILABLE", error
    # The worker itself found CUDA missing: torch here is a CPU build.
    assert "built without CUDA" in error["message"], error["message"]
    assert workers(queen) == []
    [row] = workers(queen, stopped=True)
    assert (row["backend"], row["device"]) == ("exllamav2", "cuda:0")
    assert row["state"] in ("failed", "stopped"), row
    left = set(worker_pids(under=str(tmp_path / "install"))) - before
    assert left == set()  # no process left behind, no CPU fallback
    with queen.client() as c:
        r = c.post("/v2/tasks", json={"node": "gpu", "model": model, "prompt": "hi", "device": 1})
    # device without backend means cpu (the ordinal applies to a GPU backend only)
    assert r.status_code == 200, r.text


def test_catalog_device_routes_openai_requests(
    queen: QueenProcess, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    add_node(queen, sshd, tmp_path / "install", "n1")
    model = f"file:{tiny_model_dir}"
    served = keeper(queen, "models", "serve", "gpu-tiny", "--model", model, "--node", "n1",
                    "--backend", "cuda")  # fmt: skip
    assert served.returncode == 0, served.stderr
    assert "cuda" in served.stdout
    listing = keeper(queen, "models", "catalog", "--json")
    assert listing.returncode == 0, listing.stderr
    [entry] = json.loads(listing.stdout)["models"]
    assert (entry["name"], entry["device"], entry["nodes"]) == ("gpu-tiny", "cuda", ["n1"])
    with queen.client() as c:
        r = c.post(
            "/v1/chat/completions",
            json={"model": "gpu-tiny", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "backend_unavailable"  # OpenAI's shape: lower case
    assert workers(queen, stopped=True) == []
    assert keeper(queen, "models", "unserve", "gpu-tiny").returncode == 0
    assert json.loads(keeper(queen, "models", "catalog", "--json").stdout)["models"] == []
