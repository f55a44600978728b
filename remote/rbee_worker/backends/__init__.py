"""Inference backends. Each heavy backend module is imported only when chosen."""

from __future__ import annotations

from pathlib import Path

from rbee_worker.backends.base import Backend

BACKENDS = ("torch", "exllamav2")


def create_backend(
    name: str,
    model_dir: Path,
    device: str,
    *,
    slots: int = 1,
    gpu_split: list[float] | None = None,
    cache_reserve_mb: int | None = None,
) -> Backend:
    if name == "torch":
        from rbee_worker.backends.gpu_check import CudaChecked, cuda_index
        from rbee_worker.backends.torch_backend import TorchBackend

        backend = TorchBackend(model_dir, device)
        # GPU fail-fast for torch too: a CUDA device gets the same checks and reasons.
        return backend if cuda_index(device) is None else CudaChecked(backend, device)
    if name == "exllamav2":
        from rbee_worker.backends.exllamav2_backend import (
            DEFAULT_CACHE_RESERVE_MB,
            ExLlamaV2Backend,
        )

        return ExLlamaV2Backend(
            model_dir,
            device,
            slots=slots,
            gpu_split=gpu_split,
            cache_reserve_mb=DEFAULT_CACHE_RESERVE_MB
            if cache_reserve_mb is None
            else cache_reserve_mb,
        )
    raise ValueError(f"unknown backend {name!r} (known: {', '.join(BACKENDS)})")
