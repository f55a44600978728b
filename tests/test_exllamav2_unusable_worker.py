"""A real worker process started with --backend exllamav2 on a machine
without a usable GPU: it answers BACKEND_UNAVAILABLE with the reason (never a
CPU fallback), and the queen reads that error from it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from rbee_worker.backends.gpu_check import diagnose, gather_facts
from tests.exllamav2_support import needs_no_gpu
from tests.test_worker_server import WorkerProc, kill_group, spawn_worker, wait_until_healthy

# --- a real worker process on this machine: BACKEND_UNAVAILABLE ----------------------


@pytest.fixture
def unusable_worker(tiny_model_dir: Path, tmp_path: Path) -> Iterator[WorkerProc]:
    # `--device cuda` is what `--backend exllamav2` means by default; the helper
    # passes `--device cpu` first, so it is said again here.
    extra = ("--backend", "exllamav2", "--device", "cuda")
    worker = spawn_worker(tiny_model_dir, tmp_path, "w-exl", *extra)
    try:
        yield worker
    finally:
        kill_group(worker)


def expected_reason() -> str:
    reason = diagnose(gather_facts(), 0, need_exllamav2=True)
    assert reason is not None
    return reason


@needs_no_gpu
def test_worker_without_a_usable_gpu_answers_backend_unavailable(
    unusable_worker: WorkerProc,
) -> None:
    with httpx.Client(base_url=unusable_worker.url, timeout=10) as client:
        assert wait_until_healthy(client)[-1] == 500
        health = client.get("/health").json()
        assert health == {
            "status": "error",
            "code": "BACKEND_UNAVAILABLE",
            "message": expected_reason(),
        }
        ready = client.get("/v1/ready").json()
        assert (ready["ready"], ready["state"], ready["vram_bytes"]) == (False, "error", None)
        assert ready["error"]["code"] == "BACKEND_UNAVAILABLE"
        refused = client.post("/v1/inference", json={"job_id": "j1", "prompt": "hi"})
        assert refused.status_code == 500
        assert refused.json()["error"]["code"] == "BACKEND_UNAVAILABLE"
        metrics = client.get("/metrics").text
        assert "rbee_worker_ready 0" in metrics
        assert "\nrbee_worker_vram_bytes " not in metrics  # no reading, no sample
    # Never a CPU fallback: the log says why, and no weights were loaded.
    log = unusable_worker.log()
    assert f"model load failed (BACKEND_UNAVAILABLE): {expected_reason()}" in log
    assert "loaded" not in log


@needs_no_gpu
def test_torch_on_a_cuda_device_gets_the_same_fail_fast(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    worker = spawn_worker(tiny_model_dir, tmp_path, "w-cuda", "--device", "cuda:0")
    try:
        with httpx.Client(base_url=worker.url, timeout=10) as client:
            assert wait_until_healthy(client)[-1] == 500
            health = client.get("/health").json()
        reason = diagnose(gather_facts(), 0, need_exllamav2=False)
        assert health["code"] == "BACKEND_UNAVAILABLE"
        assert health["message"] == reason
    finally:
        kill_group(worker)


def test_a_cpu_worker_reports_no_vram(tiny_model_dir: Path, tmp_path: Path) -> None:
    worker = spawn_worker(tiny_model_dir, tmp_path, "w-cpu")
    try:
        with httpx.Client(base_url=worker.url, timeout=10) as client:
            assert wait_until_healthy(client)[-1] == 200
            ready = client.get("/v1/ready").json()
            metrics = client.get("/metrics")
    finally:
        kill_group(worker)
    assert ready["vram_bytes"] is None and "error" not in ready
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "rbee_worker_ready 1\n" in metrics.text
    assert "rbee_worker_slots_total 1\n" in metrics.text
    assert "# TYPE rbee_worker_vram_bytes gauge" in metrics.text
    assert "\nrbee_worker_vram_bytes " not in metrics.text


@needs_no_gpu
async def test_the_queen_reads_backend_unavailable_from_the_worker(
    unusable_worker: WorkerProc, rbee_home: Path
) -> None:
    """The queen's start path against the real worker: its wait for readiness
    ends in BACKEND_UNAVAILABLE (the error the keeper prints as such), not in a
    generic start failure. (The queen does not yet choose exllamav2 for a
    worker by itself, so this drives its manager directly.)"""
    from rbee_queen.audit import AuditLog
    from rbee_queen.config import QueenConfig
    from rbee_queen.error_envelope import from_envelope
    from rbee_queen.errors import BackendUnavailable as QueenBackendUnavailable
    from rbee_queen.fleet.known_hosts import HostKeyStore
    from rbee_queen.fleet.pool import SessionPool
    from rbee_queen.nodes.inventory import NodeInventory
    from rbee_queen.workers.core import WorkerCore
    from rbee_queen.workers.live import LiveWorker

    config = QueenConfig.from_env(home=rbee_home)
    pool = SessionPool(HostKeyStore(rbee_home / "known_hosts"), 3.0)
    core = WorkerCore.build(
        config,
        NodeInventory(pool),
        publish=lambda event: None,
        on_transition=lambda *change: None,
        audit=AuditLog(rbee_home / "audit"),
        model_dir=lambda node, ref: None,
    )
    port = int(unusable_worker.url.rsplit(":", 1)[1])
    live = LiveWorker("w-exl", "n1", "file:/m", port, port)
    row = SimpleNamespace(worker_id="w-exl")
    try:
        with pytest.raises(QueenBackendUnavailable) as refused:
            await core.starter.wait_until_ready(None, row, live, time.monotonic() + 30)
    finally:
        await core.aclose()
    error = refused.value
    assert error.code == "BACKEND_UNAVAILABLE" and error.status == 502
    assert error.message == f"the worker cannot use its GPU: {expected_reason()}"
    # What the keeper receives turns back into the same class and line.
    again = from_envelope(error.status, error.envelope())
    assert isinstance(again, QueenBackendUnavailable) and again.message == error.message
