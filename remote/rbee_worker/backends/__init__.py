"""Inference backends. Each heavy backend module is imported only when chosen."""

from __future__ import annotations

from pathlib import Path

from rbee_worker.backends.base import Backend

BACKENDS = ("torch",)


def create_backend(name: str, model_dir: Path, device: str) -> Backend:
    if name == "torch":
        from rbee_worker.backends.torch_backend import TorchBackend

        return TorchBackend(model_dir, device)
    raise ValueError(f"unknown backend {name!r} (known: {', '.join(BACKENDS)})")
