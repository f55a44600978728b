"""Which device a request asks for, and which engine a worker on it runs.

The API speaks the original's terms: a `backend` (`cpu` or `cuda`; the
original's `metal` has no engine here and is refused as invalid input) and a
0-based `device` ordinal. Inside, a request becomes one device string: `cpu`,
`cuda` (any GPU: the one with the most free VRAM is chosen at start) or
`cuda:N` (pinned). CUDA workers run exllamav2, CPU workers torch. Nothing ever
falls back from a GPU to the CPU.
"""

from __future__ import annotations

BACKENDS = ("cpu", "cuda")
ENGINES = {"cpu": "torch", "cuda": "exllamav2"}


def requested_device(backend: str | None, ordinal: int | None) -> str:
    """The device string for an API request's `backend` and `device` fields."""
    if backend in (None, "cpu"):
        return "cpu"
    return "cuda" if ordinal is None else f"cuda:{ordinal}"


def engine_for(device: str) -> str:
    """The worker engine (`rbee_worker --backend`) for a chosen device."""
    return ENGINES["cuda" if device.startswith("cuda") else "cpu"]


def serves(worker_device: str, wanted: str) -> bool:
    """Whether a worker on `worker_device` can take a request for `wanted`:
    `cuda` takes any GPU worker, `cuda:N` and `cpu` only their own."""
    if wanted == "cuda":
        return worker_device.startswith("cuda")
    return worker_device == wanted
