"""The exllamav2 backend on a GPU (marked `gpu`, skipped with the reason
elsewhere): the tiny random Llama loaded by exllamav2, greedy output against
the torch backend's, concurrent streams and a cancel mid-way through a real
worker process.

The parts that run without a GPU are in the other tests/test_exllamav2_*.py
files: the mapping and cache arithmetic (test_exllamav2_mapping.py), the GPU
fail-fast checks and the worker's GPU options (test_exllamav2_gpu_check.py), a
real worker without a usable GPU (test_exllamav2_unusable_worker.py), and the
loop that drives the generator (test_exllamav2_job_loop.py).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from rbee_worker.backends.base import GenerationParams, GenerationResult, StopReason
from rbee_worker.backends.cache_budget import PAGE_TOKENS
from rbee_worker.backends.exllamav2_backend import ExLlamaV2Backend
from rbee_worker.backends.exllamav2_mapping import apply_sampler_values, sampler_values
from tests.test_worker_server import (
    WorkerProc,
    end_of,
    infer,
    kill_group,
    spawn_worker,
    text_of,
    wait_until_healthy,
)

# --- on a GPU ------------------------------------------------------------------------------

GPU_PROMPT = "The queen rules the hive, and"


def _generate(backend: Any, params: GenerationParams) -> tuple[str, GenerationResult]:
    generation = backend.generate(GPU_PROMPT, params, threading.Event())
    pieces = []
    while True:
        try:
            pieces.append(next(generation))
        except StopIteration as stop:
            return "".join(pieces), stop.value


@pytest.fixture(scope="module")
def exl2_backend(tiny_model_dir: Path) -> Iterator[ExLlamaV2Backend]:
    backend = ExLlamaV2Backend(tiny_model_dir, "cuda:0", slots=4, cache_reserve_mb=256)
    stages: list[str] = []
    backend.load(lambda progress: stages.append(progress.stage))
    assert stages[0] == "starting" and stages[-1] == "ready"
    assert "loading_weights" in stages and "warming_up" in stages
    yield backend
    assert backend._loop is not None
    backend._loop.stop()


@pytest.mark.gpu
def test_gpu_sampler_values_fit_the_real_settings() -> None:
    from exllamav2.generator import ExLlamaV2Sampler

    values = sampler_values(GenerationParams(temperature=0.7, top_k=5, top_p=0.9, min_p=0.1))
    settings = apply_sampler_values(ExLlamaV2Sampler.Settings(), values)
    assert {k: getattr(settings, k) for k in values} == values


@pytest.mark.gpu
def test_gpu_greedy_matches_the_torch_backend(
    exl2_backend: ExLlamaV2Backend, tiny_model_dir: Path
) -> None:
    from rbee_worker.backends.torch_backend import TorchBackend

    reference = TorchBackend(tiny_model_dir, "cpu")
    reference.load(lambda progress: None)
    greedy = GenerationParams(max_tokens=4, temperature=0.0)
    torch_text, torch_result = _generate(reference, greedy)
    exl2_text, exl2_result = _generate(exl2_backend, greedy)
    # The same weights (fp32 on the CPU, fp16 on the GPU), the same prompt ids.
    assert exl2_text == torch_text
    assert exl2_result.prompt_tokens == torch_result.prompt_tokens
    assert (exl2_result.stop_reason, exl2_result.tokens_out) == (StopReason.MAX_TOKENS, 4)
    assert exl2_backend.vram_bytes is not None and exl2_backend.vram_bytes > 0
    assert exl2_backend.cache_tokens is not None and exl2_backend.cache_tokens % PAGE_TOKENS == 0


@pytest.mark.gpu
def test_gpu_stop_string_ends_the_text_before_it(exl2_backend: ExLlamaV2Backend) -> None:
    text, _ = _generate(exl2_backend, GenerationParams(max_tokens=24, temperature=0.0))
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    assert stop.strip(), f"greedy text too short to cut: {text!r}"
    cut, result = _generate(
        exl2_backend, GenerationParams(max_tokens=24, temperature=0.0, stop=(stop,))
    )
    assert result.stop_reason is StopReason.STOP_SEQUENCE and result.stop_sequence == stop
    assert cut == text[: text.index(stop)]


@pytest.fixture(scope="module")
def gpu_worker(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProc]:
    worker = spawn_worker(
        tiny_model_dir,
        tmp_path_factory.mktemp("gpu-worker"),
        "w-gpu",
        "--backend",
        "exllamav2",
        "--device",
        "cuda:0",
        "--slots",
        "4",
    )
    try:
        with httpx.Client(base_url=worker.url, timeout=60) as client:
            assert wait_until_healthy(client, timeout=300)[-1] == 200, worker.log()
        yield worker
    finally:
        kill_group(worker)


@pytest.mark.gpu
def test_gpu_worker_streams_concurrently_and_reports_vram(gpu_worker: WorkerProc) -> None:
    body = {"prompt": GPU_PROMPT, "max_tokens": 64, "temperature": 0.0}

    def one(i: int) -> list[Any]:
        with httpx.Client(base_url=gpu_worker.url, timeout=60) as client:
            return infer(client, job_id=f"c{i}", **body)

    with ThreadPoolExecutor(4) as pool:
        streams = list(pool.map(one, range(4)))
    ends = [end_of(events) for events in streams]
    assert [(e["stop_reason"], e["tokens_out"]) for e in ends] == [("MAX_TOKENS", 64)] * 4
    assert len({text_of(events) for events in streams}) == 1  # greedy: the same text each
    with httpx.Client(base_url=gpu_worker.url, timeout=10) as client:
        ready = client.get("/v1/ready").json()
        metrics = client.get("/metrics").text
    assert ready["slots_total"] == 4 and ready["vram_bytes"] > 0
    assert f"rbee_worker_vram_bytes {ready['vram_bytes']:g}" in metrics


@pytest.mark.gpu
async def test_gpu_cancel_one_stream_midway_the_other_finishes(gpu_worker: WorkerProc) -> None:
    async with httpx.AsyncClient(base_url=gpu_worker.url, timeout=60) as client:

        async def stream(job_id: str, max_tokens: int, cancel_after: int | None) -> list[Any]:
            body = {"job_id": job_id, "prompt": GPU_PROMPT, "max_tokens": max_tokens}
            events: list[Any] = []
            async with client.stream("POST", "/v1/inference", json=body) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[len("data: ") :]
                    events.append(data if data == "[DONE]" else json.loads(data))
                    tokens = sum(1 for e in events if isinstance(e, dict) and e["type"] == "token")
                    if cancel_after is not None and tokens == cancel_after:
                        assert (await client.delete(f"/v1/inference/{job_id}")).status_code == 204
            return events

        cancelled, finished = await asyncio.gather(
            stream("cut", 2000, cancel_after=5), stream("whole", 200, cancel_after=None)
        )
    assert end_of(cancelled)["stop_reason"] == "CANCELLED"
    assert end_of(finished)["stop_reason"] == "MAX_TOKENS"
    assert end_of(finished)["tokens_out"] == 200
