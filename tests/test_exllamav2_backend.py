"""The exllamav2 backend: what runs without a GPU here, and what needs one.

Without a GPU: the mapping of rbee's sampling parameters and of exllamav2's
results, the cache arithmetic, the GPU fail-fast reasons (for real: a worker
process started with --backend exllamav2 on this machine, and the queen's
reading of its answer), the worker's GPU options, lazy imports, and the loop
that drives the generator from one thread.

With a GPU (marked `gpu`, skipped with the reason elsewhere): the tiny random
Llama loaded by exllamav2, greedy output against the torch backend's,
concurrent streams and a cancel mid-way through a real worker process.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from rbee_worker.__main__ import _parse_args
from rbee_worker.backends.base import GenerationParams, GenerationResult, StopReason
from rbee_worker.backends.cache_budget import (
    PAGE_TOKENS,
    InsufficientVram,
    cache_tokens,
    kv_bytes_per_layer_token,
    round_to_pages,
)
from rbee_worker.backends.exllamav2_backend import ExLlamaV2Backend
from rbee_worker.backends.exllamav2_mapping import (
    NEUTRAL,
    Outcome,
    apply_sampler_values,
    eos_token_ids,
    outcome_of,
    sampler_values,
    stop_conditions,
)
from rbee_worker.backends.gpu_check import (
    BackendUnavailable,
    GpuFacts,
    cuda_index,
    diagnose,
    gather_facts,
    import_exllamav2,
    narrow_visible_devices,
    require_torch_sees,
)
from rbee_worker.backends.job_loop import JobLoop
from tests.plugins.gpu import no_gpu_reason
from tests.test_worker_server import (
    WorkerProc,
    end_of,
    infer,
    kill_group,
    spawn_worker,
    text_of,
    wait_until_healthy,
)

MIB = 1024 * 1024
needs_no_gpu = pytest.mark.skipif(
    no_gpu_reason() is None, reason="a usable GPU is present: the backend would load"
)

# --- sampling parameters -> exllamav2 sampler settings ---------------------------


def test_greedy_is_top_k_one_and_everything_else_off() -> None:
    values = sampler_values(GenerationParams(temperature=0.0, top_k=40, top_p=0.5, min_p=0.2))
    assert (values["temperature"], values["top_k"], values["top_p"], values["min_p"]) == (
        1.0,
        1,
        1.0,
        0.0,
    )
    assert values["token_repetition_penalty"] == 1.0
    assert {k: values[k] for k in NEUTRAL} == dict(NEUTRAL)


def test_sampled_values_pass_through() -> None:
    params = GenerationParams(
        temperature=0.7, top_k=40, top_p=0.9, min_p=0.05, repetition_penalty=1.3
    )
    values = sampler_values(params)
    assert values["temperature"] == 0.7
    assert values["top_k"] == 40
    assert values["top_p"] == 0.9
    assert values["min_p"] == 0.05
    assert values["token_repetition_penalty"] == 1.3
    # exllamav2's own defaults (top-k 50, top-p 0.8, penalty 1.025) never leak in.
    defaults = sampler_values(GenerationParams())
    assert (defaults["top_k"], defaults["top_p"], defaults["token_repetition_penalty"]) == (
        0,
        1.0,
        1.0,
    )
    # The penalty covers the whole sequence, prompt included, like the torch backend's.
    assert values["token_repetition_range"] == -1
    assert values["temperature_last"] is False


def test_applying_values_writes_every_field_and_refuses_unknown_ones() -> None:
    values = sampler_values(GenerationParams(temperature=0.5))
    settings = SimpleNamespace(**dict.fromkeys(values, None))
    assert apply_sampler_values(settings, values) is settings
    assert vars(settings) == values
    with pytest.raises(AttributeError, match="no field 'top_k'"):
        apply_sampler_values(SimpleNamespace(temperature=1.0), {"top_k": 1})


def test_eos_ids_come_from_every_source_once() -> None:
    config = {"eos_token_id": [2, 7]}
    generation = {"eos_token_id": 7}
    assert eos_token_ids(config, generation, 9) == [2, 7, 9]
    assert eos_token_ids({}, {}, None) == []
    assert stop_conditions([2], ("\n\n", "END")) == [2, "\n\n", "END"]


# --- exllamav2 results -> rbee outcomes --------------------------------------------


def test_outcome_of_a_stop_token_does_not_count_eos_and_keeps_held_text() -> None:
    result = {"eos": True, "eos_reason": "stop_token", "new_tokens": 5, "held": {"text": "ab"}}
    assert outcome_of(result) == Outcome(StopReason.EOS, 4, tail_text="ab")


def test_outcome_of_a_stop_string_names_it() -> None:
    result = {
        "eos": True,
        "eos_reason": "stop_string",
        "eos_triggering_string": "\n\n",
        "new_tokens": 6,
    }
    assert outcome_of(result) == Outcome(StopReason.STOP_SEQUENCE, 6, stop_sequence="\n\n")


def test_outcome_of_max_new_tokens_and_of_an_unused_reason() -> None:
    assert outcome_of({"eos": True, "eos_reason": "max_new_tokens", "new_tokens": 8}) == Outcome(
        StopReason.MAX_TOKENS, 8
    )
    with pytest.raises(ValueError, match="end_filter"):
        outcome_of({"eos": True, "eos_reason": "end_filter", "new_tokens": 1})


# --- the KV cache's size -----------------------------------------------------------


def test_kv_bytes_of_the_tiny_model(tiny_model_dir: Path) -> None:
    config = json.loads((tiny_model_dir / "config.json").read_text())
    # 4 KV heads x head_dim 16 (64 / 4), keys and values, 2 bytes each.
    assert kv_bytes_per_layer_token(config) == 2 * 4 * 16 * 2
    grouped = {"num_attention_heads": 32, "num_key_value_heads": 8, "hidden_size": 4096}
    assert kv_bytes_per_layer_token(grouped) == 2 * 8 * 128 * 2


def test_cache_takes_free_vram_minus_the_reserve_in_whole_pages() -> None:
    per = 1024  # bytes per layer per token
    free = {0: 2048 * MIB}
    tokens = cache_tokens(free, {0: 32}, per, reserve_bytes=1024 * MIB, cap_tokens=10**9)
    assert tokens == (1024 * MIB // (32 * per)) // PAGE_TOKENS * PAGE_TOKENS
    assert tokens % PAGE_TOKENS == 0
    # The cap (slots x context) bounds it; a split is bounded by its tightest GPU.
    assert cache_tokens(free, {0: 32}, per, 1024 * MIB, cap_tokens=4096) == 4096
    split = cache_tokens({0: 4096 * MIB, 1: 1536 * MIB}, {0: 16, 1: 16}, per, 1024 * MIB, 10**9)
    assert split == (512 * MIB // (16 * per)) // PAGE_TOKENS * PAGE_TOKENS
    assert round_to_pages(4097) == 4352


def test_no_room_for_one_page_is_insufficient_vram() -> None:
    with pytest.raises(InsufficientVram) as refused:
        cache_tokens({0: 1100 * MIB}, {0: 80}, 4096, 1024 * MIB, 10**9)
    assert refused.value.code == "INSUFFICIENT_VRAM"
    assert "cuda:0 has 1100 MiB free" in str(refused.value)
    assert "--cache-reserve-mb" in str(refused.value)


# --- GPU fail-fast ------------------------------------------------------------------

USABLE = GpuFacts(
    driver=True,
    driver_gpus=2,
    torch_version="2.13.0+cu128",
    torch_cuda="12.8",
    exllamav2_installed=True,
)


@pytest.mark.parametrize(
    ("facts", "index", "reason"),
    [
        (GpuFacts(False, None, "2.13.0", "12.8", True), 0, "no NVIDIA driver"),
        (GpuFacts(True, 1, None, None, True), 0, "torch is not installed"),
        (GpuFacts(True, 1, "2.13.0+cpu", None, True), 0, "torch 2.13.0+cpu was built without CUDA"),
        (USABLE, 2, "GPU 2 was asked for but the driver lists 2 GPU(s)"),
        (GpuFacts(True, 1, "2.13.0", "12.8", False), 0, "exllamav2 is not installed"),
    ],
)
def test_each_missing_piece_has_its_own_reason(facts: GpuFacts, index: int, reason: str) -> None:
    found = diagnose(facts, index, need_exllamav2=True)
    assert found is not None and found.startswith(reason)
    assert "\n" not in found


def test_a_usable_stack_has_no_reason_and_torch_needs_no_exllamav2() -> None:
    assert diagnose(USABLE, 1, need_exllamav2=True) is None
    missing = GpuFacts(True, 1, "2.13.0", "12.8", exllamav2_installed=False)
    assert diagnose(missing, 0, need_exllamav2=False) is None


@pytest.mark.skipif(no_gpu_reason() is None, reason="this machine has a usable GPU")
def test_this_machine_is_diagnosed_for_real() -> None:
    import importlib.util
    import shutil

    import torch

    facts = gather_facts()
    has_driver = Path("/proc/driver/nvidia/version").exists() or bool(shutil.which("nvidia-smi"))
    assert facts.driver == has_driver
    assert (facts.torch_version, facts.torch_cuda) == (torch.__version__, torch.version.cuda)
    assert facts.exllamav2_installed == (importlib.util.find_spec("exllamav2") is not None)
    assert diagnose(facts, 0, need_exllamav2=True) is not None


@needs_no_gpu
def test_the_later_checks_refuse_for_real_here() -> None:
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailable, match="cannot use the GPU"):
            require_torch_sees(torch, 1)
    if importlib.util.find_spec("exllamav2") is None:
        with pytest.raises(BackendUnavailable, match="exllamav2 is not installed"):
            import_exllamav2()


def test_cuda_device_spellings() -> None:
    assert [cuda_index(d) for d in ("cuda", "cuda:3", "1", "cpu", "cuda:x")] == [
        0,
        3,
        1,
        None,
        None,
    ]


def test_visible_devices_are_narrowed_within_an_existing_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    narrow_visible_devices(2)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    narrow_visible_devices(1)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "6"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4")
    with pytest.raises(BackendUnavailable, match="lists 1"):
        narrow_visible_devices(1)


def test_loading_on_a_cpu_device_is_refused_before_any_import(tiny_model_dir: Path) -> None:
    backend = ExLlamaV2Backend(tiny_model_dir, "cpu")
    with pytest.raises(BackendUnavailable, match="there is no CPU path") as refused:
        backend.load(lambda progress: None)
    assert refused.value.code == "BACKEND_UNAVAILABLE"


# --- choosing a backend imports nothing heavy -----------------------------------------


def test_choosing_a_backend_imports_no_torch_nor_exllamav2(tiny_model_dir: Path) -> None:
    script = (
        "import sys\n"
        "from rbee_worker.backends import create_backend\n"
        f"a = create_backend('exllamav2', {str(tiny_model_dir)!r}, 'cuda:0', slots=4)\n"
        f"b = create_backend('torch', {str(tiny_model_dir)!r}, 'cuda')\n"
        "print(type(a).__name__, type(b).__name__)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'exllamav2') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.splitlines() == ["ExLlamaV2Backend CudaChecked", "[]"]


# --- the worker's GPU options -----------------------------------------------------------

BASE = ["--worker-id", "w1", "--model", "/m"]


def test_gpu_options_are_parsed_and_the_device_defaults_per_backend() -> None:
    args = _parse_args([*BASE, "--backend", "exllamav2", "--gpu-split", "20,24.5"])
    assert (args.device, args.gpu_split, args.cache_reserve_mb) == ("cuda", [20.0, 24.5], None)
    assert _parse_args(BASE).device == "cpu"
    args = _parse_args([*BASE, "--backend", "exllamav2", "--cache-reserve-mb", "512"])
    assert args.cache_reserve_mb == 512


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--gpu-split", "20"], "need --backend exllamav2"),
        (["--backend", "exllamav2", "--gpu-split", "20,x"], "numbers of GB"),
        (["--backend", "exllamav2", "--gpu-split", "0,8"], "each above 0"),
        (["--backend", "exllamav2", "--gpu-split", "nan"], "each above 0"),
        (["--backend", "exllamav2", "--cache-reserve-mb", "-1"], "0..1048576"),
    ],
)
def test_bad_gpu_options_are_usage_errors(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        _parse_args([*BASE, *extra])
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


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
    from rbee_queen.errors import BackendUnavailable as QueenBackendUnavailable
    from rbee_queen.errors import from_envelope
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


# --- the loop that drives the generator -------------------------------------------------


def _piece(text: str) -> dict[str, Any]:
    return {"stage": "streaming", "eos": False, "text": text, "token_ids": _Ids(1)}


class _Ids:
    """The `token_ids` of a result: only its shape is read."""

    def __init__(self, n: int) -> None:
        self.shape = (1, n)


class ScriptedGenerator:
    """Stands in for ExLlamaV2DynamicGenerator, which cannot run without a CUDA
    GPU: each job follows a script of result dicts, one per iterate() while it is
    active, and the calls are recorded. It insists, like the real one, on being
    used from one thread only."""

    def __init__(self, scripts: dict[str, Iterator[dict[str, Any]]]) -> None:
        self.scripts = scripts
        self.active: list[Any] = []
        self.cancelled: list[str] = []
        self.passes = 0
        self.fail_next_pass = False
        self._thread: int | None = None

    def _one_thread(self) -> None:
        self._thread = self._thread or threading.get_ident()
        assert self._thread == threading.get_ident(), "used from two threads"

    def enqueue(self, job: Any) -> None:
        self._one_thread()
        if job.name == "too-long":
            raise AssertionError("Job requires 99 pages (only 8 available)")
        self.active.append(job)

    def iterate(self) -> list[dict[str, Any]]:
        self._one_thread()
        self.passes += 1
        if self.fail_next_pass:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        results = []
        for job in list(self.active):
            result = {**next(self.scripts[job.name]), "identifier": job.identifier}
            results.append(result)
            if result["eos"]:
                self.active.remove(job)
        time.sleep(0.002)  # a forward pass takes time
        return results

    def cancel(self, job: Any) -> None:
        self._one_thread()
        self.active.remove(job)
        self.cancelled.append(job.name)

    def num_remaining_jobs(self) -> int:
        return len(self.active)


def _backend_on(generator: ScriptedGenerator) -> tuple[ExLlamaV2Backend, JobLoop]:
    backend = ExLlamaV2Backend(Path("/m"), "cuda")
    loop = JobLoop(generator)
    backend._loop = loop
    return backend, loop


def _run(
    backend: ExLlamaV2Backend, name: str, cancel: threading.Event | None = None
) -> tuple[list[str], GenerationResult]:
    assert backend._loop is not None
    ticket = backend._loop.submit(lambda ident: SimpleNamespace(name=name, identifier=ident))
    stream = backend._stream(ticket, cancel or threading.Event(), prompt_tokens=3)
    pieces = []
    while True:
        try:
            pieces.append(next(stream))
        except StopIteration as stop:
            return pieces, stop.value


def test_results_reach_their_own_request_and_end_as_rbee_results() -> None:
    eos = {"eos": True, "stage": "streaming", "eos_reason": "stop_token", "new_tokens": 3}
    stop = {
        "eos": True,
        "stage": "streaming",
        "text": "c",
        "eos_reason": "stop_string",
        "eos_triggering_string": "!",
        "new_tokens": 4,
    }
    generator = ScriptedGenerator(
        {
            "a": iter([{"stage": "started", "eos": False}, _piece("He"), _piece("llo"), eos]),
            "b": iter([_piece("a"), _piece("b"), {**stop, "held": {"text": "!x"}}]),
        }
    )
    backend, loop = _backend_on(generator)
    try:
        with ThreadPoolExecutor(2) as pool:
            a, b = pool.map(lambda name: _run(backend, name), ["a", "b"])
    finally:
        loop.stop()
    assert a == (["He", "llo"], GenerationResult(StopReason.EOS, 2, prompt_tokens=3))
    assert b == (
        ["a", "b", "c"],
        GenerationResult(StopReason.STOP_SEQUENCE, 4, prompt_tokens=3, stop_sequence="!"),
    )
    assert loop.active == 0 and generator.active == []


def test_cancel_takes_the_job_out_of_the_generator_while_another_runs_on() -> None:
    endless = (_piece("x") for _ in itertools.count())
    done = {"eos": True, "stage": "streaming", "eos_reason": "max_new_tokens", "new_tokens": 40}
    generator = ScriptedGenerator(
        {"long": endless, "short": iter([*(_piece("y") for _ in range(39)), done])}
    )
    backend, loop = _backend_on(generator)
    cancel = threading.Event()
    try:
        with ThreadPoolExecutor(2) as pool:
            short = pool.submit(_run, backend, "short")
            ticket = loop.submit(lambda ident: SimpleNamespace(name="long", identifier=ident))
            stream = backend._stream(ticket, cancel, prompt_tokens=3)
            assert [next(stream) for _ in range(5)] == ["x"] * 5
            cancel.set()  # the client went away
            with pytest.raises(StopIteration) as ended:
                while True:
                    next(stream)
            pieces, result = short.result(timeout=10)
    finally:
        loop.stop()
    cancelled = ended.value.value
    assert cancelled.stop_reason is StopReason.CANCELLED and cancelled.tokens_out >= 5
    assert generator.cancelled == ["long"] and ticket.cancelled
    assert (len(pieces), result.stop_reason, result.tokens_out) == (39, StopReason.MAX_TOKENS, 40)
    assert generator.active == [] and loop.active == 0


def test_a_job_the_generator_refuses_fails_alone() -> None:
    generator = ScriptedGenerator(
        {
            "ok": iter(
                [
                    _piece("a"),
                    {**_piece(""), "eos": True, "eos_reason": "max_new_tokens", "new_tokens": 2},
                ]
            )
        }
    )
    backend, loop = _backend_on(generator)
    try:
        with pytest.raises(RuntimeError, match="requires 99 pages"):
            _run(backend, "too-long")
        pieces, result = _run(backend, "ok")
    finally:
        loop.stop()
    assert (pieces, result.stop_reason) == (["a"], StopReason.MAX_TOKENS)


def test_a_failed_pass_ends_every_job_with_the_error_and_the_loop_goes_on() -> None:
    generator = ScriptedGenerator(
        {
            "p": (_piece("p") for _ in itertools.count()),
            "q": (_piece("q") for _ in itertools.count()),
        }
    )
    backend, loop = _backend_on(generator)
    try:
        with ThreadPoolExecutor(2) as pool:
            runs = [pool.submit(_run, backend, name) for name in ("p", "q")]
            time.sleep(0.05)
            generator.fail_next_pass = True
            for run in runs:
                with pytest.raises(RuntimeError, match="illegal memory access"):
                    run.result(timeout=10)
        assert sorted(generator.cancelled) == ["p", "q"] and generator.active == []
        generator.fail_next_pass = False
        generator.scripts["r"] = iter(
            [
                {
                    "eos": True,
                    "stage": "streaming",
                    "eos_reason": "max_new_tokens",
                    "new_tokens": 1,
                    "text": "r",
                }
            ]
        )
        assert _run(backend, "r")[0] == ["r"]
    finally:
        loop.stop()


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
