"""GPU fail-fast: a worker asked for CUDA either gets a usable GPU or says why not.

It never falls back to the CPU. The reason is one line naming the first missing
piece, in the order a person would fix them: the NVIDIA driver, a CUDA build of
torch, the GPU asked for, exllamav2 itself, then its CUDA extension (which
compiles on first import). Facts are gathered cheaply first (files, package
metadata, no CUDA initialisation), so `diagnose` is a pure function of them.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rbee_worker.backends.base import (
    Backend,
    Generation,
    GenerationParams,
    LoadError,
    ProgressCallback,
)

BACKEND_UNAVAILABLE = "BACKEND_UNAVAILABLE"
NVIDIA_PROC = Path("/proc/driver/nvidia")
NOT_INSTALLED = "exllamav2 is not installed in the worker's environment (pip install exllamav2)"
_CUDA_DEVICE = re.compile(r"^(cuda(:(\d+))?|(\d+))$")


class BackendUnavailable(LoadError):
    """The GPU stack this worker needs is not usable on this node."""

    code = BACKEND_UNAVAILABLE

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def cuda_index(device: str) -> int | None:
    """'cuda' -> 0, 'cuda:N' or 'N' -> N; None for anything else (cpu)."""
    match = _CUDA_DEVICE.match(device)
    if match is None:
        return None
    return int(match.group(3) or match.group(4) or 0)


@dataclass(frozen=True)
class GpuFacts:
    driver: bool  # the NVIDIA kernel driver is loaded (or nvidia-smi is on PATH)
    driver_gpus: int | None  # GPUs the driver lists, None where it cannot be read
    torch_version: str | None  # None: torch is not installed
    torch_cuda: str | None  # the CUDA version torch was built with; None: a CPU build
    exllamav2_installed: bool


def gather_facts() -> GpuFacts:
    torch_version, torch_cuda = _torch_build()
    return GpuFacts(
        driver=(NVIDIA_PROC / "version").exists() or shutil.which("nvidia-smi") is not None,
        driver_gpus=_driver_gpu_count(),
        torch_version=torch_version,
        torch_cuda=torch_cuda,
        exllamav2_installed=importlib.util.find_spec("exllamav2") is not None,
    )


def diagnose(facts: GpuFacts, index: int, *, need_exllamav2: bool) -> str | None:
    """Why CUDA device `index` cannot be used, or None when nothing is known to block it."""
    if not facts.driver:
        return "no NVIDIA driver on this node (no /proc/driver/nvidia, no nvidia-smi)"
    if facts.torch_version is None:
        return "torch is not installed in the worker's environment"
    if facts.torch_cuda is None:
        return f"torch {facts.torch_version} was built without CUDA; install a CUDA build"
    if facts.driver_gpus is not None and index >= facts.driver_gpus:
        return f"GPU {index} was asked for but the driver lists {facts.driver_gpus} GPU(s)"
    if need_exllamav2 and not facts.exllamav2_installed:
        return NOT_INSTALLED
    return None


def require_cuda(device: str, *, need_exllamav2: bool) -> int:
    """Raise BackendUnavailable unless `device` can be used; return its index."""
    index = cuda_index(device)
    if index is None:
        raise BackendUnavailable(
            f"device {device!r} is not a CUDA device (cuda, cuda:N or N); there is no CPU path"
        )
    reason = diagnose(gather_facts(), index, need_exllamav2=need_exllamav2)
    if reason is not None:
        raise BackendUnavailable(reason)
    return index


def require_torch_sees(torch: Any, count: int) -> None:
    """After CUDA starts: the driver may be there and still refuse this torch."""
    if not torch.cuda.is_available():
        raise BackendUnavailable(
            f"torch {torch.__version__} (CUDA {torch.version.cuda}) cannot use the GPU: "
            "is the driver older than torch's CUDA?"
        )
    if torch.cuda.device_count() < count:
        raise BackendUnavailable(
            f"{count} GPU(s) needed but torch sees {torch.cuda.device_count()}"
        )


def import_exllamav2() -> Any:
    """Import exllamav2, whose CUDA extension is built (or loaded) on first import."""
    try:
        import exllamav2
    except ModuleNotFoundError as exc:
        if exc.name != "exllamav2":
            raise BackendUnavailable(f"exllamav2 cannot be imported: {exc}") from exc
        raise BackendUnavailable(NOT_INSTALLED) from exc
    except Exception as exc:  # a failed C++/CUDA build raises many kinds of error
        text = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise BackendUnavailable(f"exllamav2's CUDA extension cannot be built: {text}") from exc
    return exllamav2


def _torch_build() -> tuple[str | None, str | None]:
    """torch's version and CUDA version, read without starting CUDA."""
    if importlib.util.find_spec("torch") is None:
        return None, None
    import torch

    return str(torch.__version__), torch.version.cuda


def _driver_gpu_count() -> int | None:
    try:
        return len(list((NVIDIA_PROC / "gpus").iterdir()))
    except OSError:
        return None


def narrow_visible_devices(index: int) -> None:
    """Show this process only GPU `index`, so exllamav2 (which loads onto the
    first visible GPU) uses it. Must run before CUDA starts in this process.
    An existing CUDA_VISIBLE_DEVICES list is respected: `index` counts within it."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        entries = [e.strip() for e in visible.split(",") if e.strip()]
        if index >= len(entries):
            raise BackendUnavailable(
                f"GPU {index} was asked for but CUDA_VISIBLE_DEVICES lists {len(entries)}"
            )
        os.environ["CUDA_VISIBLE_DEVICES"] = entries[index]
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index)


class CudaChecked:
    """Another backend (torch on a CUDA device) behind the same fail-fast checks,
    so a torch worker asked for CUDA also answers BACKEND_UNAVAILABLE with why."""

    def __init__(self, backend: Backend, device: str) -> None:
        self._backend = backend
        self._device = device

    @property
    def model_name(self) -> str:
        return self._backend.model_name

    def load(self, progress: ProgressCallback) -> None:
        require_cuda(self._device, need_exllamav2=False)
        self._backend.load(progress)

    def generate(
        self, prompt: str, params: GenerationParams, cancel: threading.Event
    ) -> Generation:
        return self._backend.generate(prompt, params, cancel)

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        return self._backend.render_chat(messages)
