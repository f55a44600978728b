"""The `gpu` marker: such tests run only where a CUDA GPU is usable, and skip
elsewhere (CI) with the reason, found by the worker's own GPU fail-fast check."""

from __future__ import annotations

import pytest


def no_gpu_reason() -> str | None:
    from rbee_worker.backends.gpu_check import diagnose, gather_facts

    reason = diagnose(gather_facts(), 0, need_exllamav2=False)
    if reason is not None:
        return reason
    import torch  # only now: a CUDA build of torch is there, and a driver

    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA GPU"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    marked = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not marked:
        return
    reason = no_gpu_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"needs a CUDA GPU: {reason}")
    for item in marked:
        item.add_marker(skip)
