"""Device choice and GPU checks before a worker starts, from nvidia-smi answers
(no GPU here: tests/data/nvidia-smi, written by hand in nvidia-smi's CSV format,
stand in for the cards)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rbee_hive.gpus import parse_nvidia_smi
from rbee_queen.errors import BackendUnavailable, GpuTooHot, InsufficientVram
from rbee_queen.workers.resources import VRAM_OVERHEAD, check_fits, choose_device

RECORDED = Path(__file__).parent / "data" / "nvidia-smi"
GIB = 1024**3


def probe_of(recording: str) -> dict[str, Any]:
    return {"gpus": parse_nvidia_smi((RECORDED / recording).read_text())}


def test_auto_choice_takes_the_gpu_with_most_free_vram() -> None:
    assert choose_device(probe_of("2x-rtx3090.csv"), "cuda", "n1") == "cuda:0"
    # The 4090 is bigger but nearly full: the 3060 has more free memory.
    assert choose_device(probe_of("mixed-4090-3060.csv"), "cuda", "n1") == "cuda:1"
    assert choose_device(probe_of("2x-rtx3090.csv"), "cuda:1", "n1") == "cuda:1"
    assert choose_device(probe_of("none.txt"), "cpu", "n1") == "cpu"


def test_cuda_without_a_gpu_or_a_missing_device_is_backend_unavailable() -> None:
    with pytest.raises(BackendUnavailable) as none:
        choose_device(probe_of("none.txt"), "cuda", "n1")
    assert "no usable NVIDIA GPU" in none.value.message
    with pytest.raises(BackendUnavailable) as missing:
        choose_device(probe_of("1x-h100.csv"), "cuda:3", "n1")
    assert "cuda:0" in missing.value.message and missing.value.details["device"] == "cuda:3"


def test_a_gpu_above_the_limit_is_too_hot() -> None:
    with pytest.raises(GpuTooHot) as hot:
        choose_device(probe_of("2x-rtx3090.csv"), "cuda:1", "n1", max_temp_c=60)
    assert hot.value.details == {
        "node": "n1",
        "device": "cuda:1",
        "temperature_c": 67,
        "limit_c": 60,
    }
    assert choose_device(probe_of("2x-rtx3090.csv"), "cuda:0", "n1", max_temp_c=60) == "cuda:0"


def test_vram_fit_uses_the_recorded_free_memory() -> None:
    # Without the model's config: the weights plus the fixed overhead (the KV
    # cache from config.json is in tests/test_vram_preflight.py).
    probe = probe_of("2x-rtx3090.csv")
    free1 = (24576 - 18432) * 1024**2
    check_fits(free1 - VRAM_OVERHEAD, probe, "cuda:1", "n1")
    with pytest.raises(InsufficientVram) as refused:
        check_fits(free1 - VRAM_OVERHEAD + 1, probe, "cuda:1", "n1")
    assert refused.value.details["available_bytes"] == free1
    assert refused.value.details["required_bytes"] == free1 + 1
