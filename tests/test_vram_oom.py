"""A CUDA out-of-memory ends one request with VRAM_OOM and the worker serves
the next one; during a load it is the load's failure, VRAM_OOM too.

No GPU is physically present here, so the out-of-memory is raised where CUDA
would raise it: torch's own `torch.cuda.OutOfMemoryError` (it exists in CPU
builds of torch) from the model's forward pass, and exllamav2's RuntimeError
forms from a stand-in for its generator (the real one needs a GPU). Everything
else is real: the worker process, its torch backend and tiny model, the queen,
sshd and the helper. The real thing is the test marked `gpu` at the end, which
fills a real GPU until a forward pass fails (docs/gpu-verification.md).
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

from rbee_queen.api.openai import _stream_error
from rbee_queen.api.openai_format import error_body
from rbee_queen.errors import VramOom as QueenVramOom
from rbee_queen.workers.starter import load_failure
from rbee_worker.backends.base import GenerationParams, VramOom, is_vram_oom
from rbee_worker.backends.torch_backend import TorchBackend
from rbee_worker.loading import BackendHolder
from tests.lifecycle_support import run_task, workers
from tests.plugins.queen import start_queen, stop_queen
from tests.plugins.sshd import SshServer
from tests.test_exllamav2_job_loop import ScriptedGenerator, _backend_on, _piece, _run
from tests.test_newcomer_hints import doc_pattern

OOM_TEXT = "CUDA out of memory. Tried to allocate 64.00 MiB"

# The node's worker python for the end-to-end test: the real worker, whose
# model's third forward pass (the first request's second token) raises torch's
# OutOfMemoryError as CUDA would. Any other use of the interpreter is passed on.
WORKER_PYTHON = f"""#!{sys.executable}
import itertools, os, runpy, sys
if sys.argv[1:3] != ["-m", "rbee_worker"]:
    os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
import torch
from rbee_worker.backends import torch_backend

real_load = torch_backend.TorchBackend.load

def load(self, progress):
    real_load(self, progress)
    forward, calls = self._model.forward, itertools.count(1)

    def failing_forward(*args, **kwargs):
        if next(calls) == 3:
            raise torch.cuda.OutOfMemoryError({OOM_TEXT!r})
        return forward(*args, **kwargs)

    self._model.forward = failing_forward

torch_backend.TorchBackend.load = load
sys.argv = [sys.argv[0], *sys.argv[3:]]
runpy.run_module("rbee_worker", run_name="__main__", alter_sys=True)
"""


def test_only_out_of_memory_errors_are_vram_oom() -> None:
    assert is_vram_oom(torch.cuda.OutOfMemoryError(OOM_TEXT))
    assert is_vram_oom(RuntimeError("CUDA out of memory"))  # exllamav2's kernels
    assert is_vram_oom(RuntimeError("Insufficient VRAM for model and cache"))  # its loader
    assert not is_vram_oom(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert not is_vram_oom(MemoryError())  # the node's RAM: the OOM killer's business
    assert not is_vram_oom(ValueError("CUDA out of memory"))


def test_an_out_of_memory_while_loading_is_the_loads_vram_oom(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers

    def no_room(*args: Any, **kwargs: Any) -> Any:
        raise torch.cuda.OutOfMemoryError(OOM_TEXT)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_room)
    holder = BackendHolder(TorchBackend(tiny_model_dir, "cpu"))
    holder.load()
    assert holder.error_code == "VRAM_OOM" and OOM_TEXT in (holder.error or "")
    error = load_failure({"code": holder.error_code, "message": holder.error})
    assert isinstance(error, QueenVramOom) and error.code == "VRAM_OOM"
    line = f"[{error.code}] {error.message}"  # as the keeper prints it
    assert doc_pattern("[VRAM_OOM] the worker ran out of GPU memory while loading").match(line)


def test_the_openai_routes_keep_the_streams_oom_codes() -> None:
    for code in ("VRAM_OOM", "WORKER_OOM"):
        event = {"type": "error", "code": code, "message": "out of memory", "details": {"x": 1}}
        body = error_body(_stream_error(event), "cid")["error"]
        assert body["code"] == code.lower() and body["type"] == "server_error", body


class OutOfMemoryOnce(ScriptedGenerator):
    """exllamav2's generator whose next pass runs out of memory, as its C++
    kernels say it (a plain RuntimeError)."""

    def iterate(self) -> list[dict[str, Any]]:
        if self.fail_next_pass:
            self.fail_next_pass = False
            raise RuntimeError("CUDA out of memory")
        return super().iterate()


class CudaRecorder:
    """Stands in for torch on a GPU: records that freed memory was handed back."""

    def __init__(self) -> None:
        self.emptied = 0
        self.cuda = self

    def empty_cache(self) -> None:
        self.emptied += 1


def test_exllamav2_out_of_memory_ends_the_passs_jobs_as_vram_oom_and_goes_on() -> None:
    generator = OutOfMemoryOnce({"p": (_piece("p") for _ in itertools.count())})
    backend, loop = _backend_on(generator)
    backend._torch = cuda = CudaRecorder()
    try:
        with ThreadPoolExecutor(1) as pool:
            run = pool.submit(_run, backend, "p")
            time.sleep(0.05)
            generator.fail_next_pass = True
            with pytest.raises(VramOom, match="ran out of memory for this request"):
                run.result(timeout=10)
        assert generator.cancelled == ["p"] and generator.active == []  # its pages are free
        assert cuda.emptied == 1
        generator.scripts["r"] = iter(
            [{"eos": True, "stage": "streaming", "eos_reason": "max_new_tokens", "text": "r"}]
        )
        assert _run(backend, "r")[0] == ["r"]
    finally:
        loop.stop()


def test_a_request_out_of_gpu_memory_is_vram_oom_and_the_worker_serves_the_next(
    rbee_home: Path, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    python = tmp_path / "worker-python"
    python.write_text(WORKER_PYTHON)
    python.chmod(0o755)
    queen = start_queen(rbee_home)
    try:
        body = sshd.node_body("n1", tmp_path / "install", accept_new_host_key=True)
        with queen.client() as c:
            r = c.post("/v2/registry/beehives/add", json={**body, "worker_python": str(python)})
            assert r.status_code == 201, r.text
        failed = run_task(queen, tiny_model_dir, max_tokens=8, temperature=0)
        assert failed[0]["type"] == "started" and failed[-1]["type"] == "error", failed
        assert failed[-1]["code"] == "VRAM_OOM" and OOM_TEXT in failed[-1]["message"]
        line = f"[VRAM_OOM] {failed[-1]['message']}"  # troubleshooting's line for it
        assert doc_pattern("[VRAM_OOM] the GPU ran out of memory for this request").match(line)
        (worker,) = workers(queen)
        served = run_task(queen, tiny_model_dir, max_tokens=4, temperature=0)
        assert served[-1]["type"] == "end", served
        (after,) = workers(queen)
        assert after["pid"] == worker["pid"] and after["state"] in ("idle", "busy")
        with queen.client() as c:
            events = c.get(f"/v2/workers/{worker['worker_id']}/events").json()["events"]
        states = [e["to_state"] for e in events]
        assert not {"failed", "hung", "killing", "restarting"} & set(states), states
    finally:
        stop_queen(queen)


@pytest.mark.gpu
def test_gpu_a_real_cuda_out_of_memory_ends_one_generation_and_the_next_runs(
    tiny_model_dir: Path,
) -> None:
    """On a GPU (skipped elsewhere): the GPU is filled by this process until the
    tiny model's next forward pass cannot get memory, a real CUDA OOM."""
    backend = TorchBackend(tiny_model_dir, "cuda:0")
    backend.load(lambda progress: None)
    params = GenerationParams(max_tokens=8, temperature=0)
    filler = []
    free, _ = torch.cuda.mem_get_info(0)
    while free > 2 * 1024**2:  # all but a sliver, in chunks the allocator can place
        chunk = max(free // 2, 1024**2)
        try:
            filler.append(torch.empty(chunk, dtype=torch.uint8, device="cuda:0"))
        except torch.cuda.OutOfMemoryError:
            break
        free, _ = torch.cuda.mem_get_info(0)
    with pytest.raises(VramOom, match="ran out of memory for this request"):
        list(backend.generate("hello " * 64, params, threading.Event()))
    filler.clear()
    generation = backend.generate("hello", params, threading.Event())
    while True:
        try:
            next(generation)
        except StopIteration as stop:
            assert stop.value.tokens_out > 0
            break
