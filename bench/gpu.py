"""GPU throughput: rbee's exllamav2 worker against exllamav2's own generator.

    .venv/bin/python -m bench.gpu --model /path/to/model [--device cuda:0]
        [--streams 1,4,16] [--max-tokens 256]

For each number of concurrent streams, greedy, every stream running to
--max-tokens: first exllamav2's dynamic generator driven directly in this
process (the bare baseline), then the same model through a real rbee worker
process (`python -m rbee_worker --backend exllamav2`) over HTTP, one streamed
request per stream. Prints tokens per second (aggregate and per stream) and
the ratios the GPU issue sets as targets: rbee single-stream against bare
single-stream (at least 0.95), and rbee's aggregate at 16 streams against its
single stream (at least 6). Without --model it writes the tiny test model,
whose figures say little about a real model.

Without a usable CUDA GPU (or without exllamav2) it exits 1 and says why.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from rbee_worker.backends.gpu_check import cuda_index, diagnose, gather_facts

PROMPT = "Once upon a time, in a small village by the sea, there lived"


@dataclass(frozen=True)
class Run:
    streams: int
    tokens: int
    seconds: float

    @property
    def aggregate(self) -> float:
        return self.tokens / self.seconds

    @property
    def per_stream(self) -> float:
        return self.aggregate / self.streams


def refuse_without_gpu(device: str) -> None:
    index = cuda_index(device)
    if index is None:
        sys.exit(f"bench.gpu: {device!r} is not a CUDA device (cuda, cuda:N or N)")
    reason = diagnose(gather_facts(), index, need_exllamav2=True)
    if reason is None:
        import torch

        if not torch.cuda.is_available():
            reason = f"torch {torch.__version__} sees no CUDA GPU"
    if reason is not None:
        sys.exit(f"bench.gpu needs a CUDA GPU with exllamav2: {reason}")


# --- bare exllamav2 ------------------------------------------------------------------


def bare_runs(model_dir: Path, streams: list[int], max_tokens: int) -> list[Run]:
    """exllamav2's dynamic generator, driven as its own examples do."""
    import torch
    from exllamav2 import ExLlamaV2, ExLlamaV2Cache, ExLlamaV2Config, ExLlamaV2Tokenizer
    from exllamav2.generator import (
        ExLlamaV2DynamicGenerator,
        ExLlamaV2DynamicJob,
        ExLlamaV2Sampler,
    )

    config = ExLlamaV2Config(str(model_dir))
    config.arch_compat_overrides()
    model = ExLlamaV2(config)
    most = max(streams)
    per_job = -(-(len(PROMPT) + max_tokens + 64) // 256) * 256  # pages; the prompt is short
    cache = ExLlamaV2Cache(model, max_seq_len=per_job * most, lazy=True)
    model.load_autosplit(cache)
    tokenizer = ExLlamaV2Tokenizer(config)
    generator = ExLlamaV2DynamicGenerator(
        model=model, cache=cache, tokenizer=tokenizer, max_batch_size=most
    )
    generator.warmup()
    input_ids = tokenizer.encode(PROMPT, add_bos=True)
    runs = []
    for n in streams:
        for i in range(n):
            generator.enqueue(
                ExLlamaV2DynamicJob(
                    input_ids=input_ids,
                    max_new_tokens=max_tokens,
                    gen_settings=ExLlamaV2Sampler.Settings.greedy(),
                    identifier=i,
                )
            )
        made = 0
        started = time.perf_counter()
        while generator.num_remaining_jobs():
            for result in generator.iterate():
                if result.get("eos"):
                    made += int(result["new_tokens"])
        runs.append(Run(n, made, time.perf_counter() - started))
    del generator, cache, model
    torch.cuda.empty_cache()
    return runs


# --- through an rbee worker ----------------------------------------------------------


def start_worker(model_dir: Path, device: str, slots: int, run_dir: Path) -> tuple[Any, str]:
    state = run_dir / "worker.state.json"
    argv = [sys.executable, "-m", "rbee_worker", "--worker-id", "bench-gpu"]
    argv += ["--model", str(model_dir), "--backend", "exllamav2", "--device", device]
    argv += ["--slots", str(slots), "--state-file", str(state)]
    log = (run_dir / "worker.log").open("wb")
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 600
    while not state.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"the worker did not start; see {run_dir / 'worker.log'}")
        time.sleep(0.05)
    url = f"http://127.0.0.1:{json.loads(state.read_text())['port']}"
    with httpx.Client(base_url=url, timeout=10) as client:
        while (status := client.get("/health").status_code) == 503:
            if time.monotonic() > deadline:
                sys.exit("the worker is still loading after 600 s")
            time.sleep(0.2)
    if status != 200:
        sys.exit(f"the worker could not load the model; see {run_dir / 'worker.log'}")
    return proc, url


def one_stream(url: str, job_id: str, max_tokens: int) -> int:
    body = {"job_id": job_id, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0.0}
    with httpx.Client(base_url=url, timeout=600) as client:
        with client.stream("POST", "/v1/inference", json=body) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if line.startswith("data: {") and '"type": "end"' in line:
                    return int(json.loads(line[len("data: ") :])["tokens_out"])
    raise RuntimeError(f"stream {job_id} ended without an end event")


def rbee_runs(url: str, streams: list[int], max_tokens: int) -> list[Run]:
    one_stream(url, "warm-up", 8)
    runs = []
    for n in streams:
        with ThreadPoolExecutor(n) as pool:
            started = time.perf_counter()
            jobs = [f"s{n}-{i}" for i in range(n)]
            made = sum(pool.map(lambda job: one_stream(url, job, max_tokens), jobs))
            runs.append(Run(n, made, time.perf_counter() - started))
    return runs


# --- report --------------------------------------------------------------------------


def report(bare: list[Run], rbee: list[Run]) -> None:
    print(
        "| streams | bare tok/s (aggregate / per stream) | rbee tok/s (aggregate / per stream)"
        " | rbee / bare |"
    )
    print("| --- | --- | --- | --- |")
    for b, r in zip(bare, rbee, strict=True):
        print(
            f"| {b.streams} | {b.aggregate:.0f} / {b.per_stream:.0f} | "
            f"{r.aggregate:.0f} / {r.per_stream:.0f} | {r.aggregate / b.aggregate:.3f} |"
        )
    single = next((r for r in rbee if r.streams == 1), None)
    single_bare = next((b for b in bare if b.streams == 1), None)
    most = rbee[-1]
    if single and single_bare:
        print(
            "rbee single stream / bare single stream: "
            f"{single.aggregate / single_bare.aggregate:.3f} (target >= 0.95)"
        )
    if single and most.streams > 1:
        print(
            f"rbee aggregate at {most.streams} streams / single stream: "
            f"{most.aggregate / single.aggregate:.2f} (target >= 6)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="model directory (default: the tiny test model)")
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--streams", default="1,4,16")
    parser.add_argument("--max-tokens", type=int, default=256)
    args = parser.parse_args()
    streams = sorted({int(s) for s in args.streams.split(",")})
    refuse_without_gpu(args.device)
    run_dir = Path(tempfile.mkdtemp(prefix="rbee-bench-gpu-"))
    model_dir = args.model
    if model_dir is None:
        from rbee_worker.tinymodel import write_tiny_model

        model_dir = write_tiny_model(run_dir / "tiny-llama")
        print("no --model: the tiny test model (figures say little about real models)")
    os.environ["CUDA_VISIBLE_DEVICES"] = str(cuda_index(args.device))
    bare = bare_runs(model_dir, streams, args.max_tokens)
    # The worker narrows the devices itself; it sees the one GPU as cuda:0.
    proc, url = start_worker(model_dir, "cuda:0", max(streams), run_dir)
    try:
        rbee = rbee_runs(url, streams, args.max_tokens)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    import torch

    print(
        f"GPU: {torch.cuda.get_device_name(0)}; model: {model_dir.name}; "
        f"{args.max_tokens} tokens per stream, greedy"
    )
    report(bare, rbee)


if __name__ == "__main__":
    main()
