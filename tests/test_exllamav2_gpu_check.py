"""The GPU fail-fast checks behind the exllamav2 backend (each missing piece
has its own reason; this machine diagnosed for real), CUDA device spellings,
lazy imports when a backend is chosen, and the worker's GPU options."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rbee_worker.__main__ import _parse_args
from rbee_worker.backends.exllamav2_backend import ExLlamaV2Backend
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
from tests.exllamav2_support import needs_no_gpu
from tests.plugins.gpu import no_gpu_reason

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
