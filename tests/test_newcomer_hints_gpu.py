"""docs/troubleshooting.md's GPU section against the worker's real fail-fast checks.

This machine has no GPU. What it can produce for real it does: a queen starting
a CUDA worker on a node whose `nvidia-smi` answers as an H100 would (the
recorded output in tests/data/nvidia-smi), this torch refusing CUDA, an
exllamav2 that is missing or whose import fails. A GPU's own answers (how many
the driver lists, its free VRAM) are physically absent: those facts are given
to the same functions the worker runs, and each reason checked against its row.
The flash-attn line is logged by the backend itself with flash_attn really
absent, behind a stand-in for exllamav2's attn module (which needs CUDA).
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rbee_queen.workers.starter import load_failure
from rbee_worker.backends.cache_budget import MIB, InsufficientVram, cache_tokens
from rbee_worker.backends.exllamav2_backend import ExLlamaV2Backend
from rbee_worker.backends.gpu_check import (
    BackendUnavailable,
    GpuFacts,
    diagnose,
    import_exllamav2,
    require_torch_sees,
)
from tests.exllamav2_support import needs_no_gpu
from tests.plugins.queen import QueenProcess
from tests.plugins.sshd import SshServer
from tests.test_devices import add_node, h100_sshd  # noqa: F401 - fixture
from tests.test_newcomer_hints import doc_pattern, row_patterns
from tests.test_newcomer_hints_models import assert_gives_bytes

GPU_ROWS = (
    "no NVIDIA driver",
    "torch is not installed",
    "torch X+cpu",
    "GPU N was asked",
    "exllamav2 is not installed",
    "torch … (CUDA …)",
    "exllamav2's CUDA extension",
)


def assert_reason_row(start: str, reason: str) -> None:
    (pattern,) = row_patterns(start)
    assert pattern.match(reason), (reason, pattern.pattern)


def test_a_cuda_worker_on_a_node_without_a_usable_gpu_or_room_names_its_line(
    queen: QueenProcess,
    h100_sshd: SshServer,  # noqa: F811 - the imported fixture
    tiny_model_dir: Path,
    tmp_path: Path,
) -> None:
    add_node(queen, h100_sshd, tmp_path / "install", "gpu")
    task = {"node": "gpu", "model": f"file:{tiny_model_dir}", "prompt": "hi", "backend": "cuda"}
    with queen.client() as client:
        answer = client.post("/v2/tasks", json=task)
    assert answer.status_code == 502, answer.text
    error = answer.json()["error"]
    line = f"[{error['code']}] {error['message']}"
    assert doc_pattern("[BACKEND_UNAVAILABLE] the worker cannot use its GPU").match(line), line
    reason = error["message"].removeprefix("the worker cannot use its GPU: ")
    # Which piece is missing first depends on this machine's torch: some row names it.
    assert any(p.match(reason) for start in GPU_ROWS for p in row_patterns(start)), reason

    # Weights past the H100's free VRAM: refused by the queen's preflight, no worker.
    huge = tmp_path / "huge"
    huge.mkdir()
    shutil.copy(tiny_model_dir / "config.json", huge)
    with open(huge / "model.safetensors", "wb") as weights:
        weights.truncate(1 << 40)  # sparse: a terabyte on no disk
    with queen.client() as client:
        answer = client.post("/v2/tasks", json={**task, "model": f"file:{huge}"})
    error = answer.json()["error"]
    assert doc_pattern("[INSUFFICIENT_VRAM]").match(f"[{error['code']}] {error['message']}")
    assert_gives_bytes(error)


# The facts a GPU node would report, each missing one piece (no GPU here to ask).
FACTS = {
    "no NVIDIA driver": (GpuFacts(False, None, "2.13.0", "12.8", True), 0),
    "torch is not installed": (GpuFacts(True, 1, None, None, True), 0),
    "torch X+cpu": (GpuFacts(True, 1, "2.13.0+cpu", None, True), 0),
    "GPU N was asked": (GpuFacts(True, 2, "2.13.0+cu128", "12.8", True), 2),
    "exllamav2 is not installed": (GpuFacts(True, 1, "2.13.0", "12.8", False), 0),
}


@pytest.mark.parametrize("start", list(FACTS))
def test_each_missing_piece_matches_its_row(start: str) -> None:
    facts, index = FACTS[start]
    reason = diagnose(facts, index, need_exllamav2=True)
    assert reason is not None
    assert_reason_row(start, reason)


@needs_no_gpu
def test_this_torch_refusing_cuda_matches_its_row() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.fail("needs_no_gpu let a usable GPU through")
    with pytest.raises(BackendUnavailable) as refused:
        require_torch_sees(torch, 1)
    assert_reason_row("torch … (CUDA …)", refused.value.reason)


def importing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> Callable[[], object]:
    """An `exllamav2` package on the path whose import runs `body`."""
    package = tmp_path / "exllamav2"
    package.mkdir()
    (package / "__init__.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "exllamav2", raising=False)
    return import_exllamav2


def test_exllamav2_missing_or_failing_to_build_matches_its_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(BackendUnavailable) as missing:
        importing(tmp_path, monkeypatch, "raise ModuleNotFoundError(name='exllamav2')")()
    assert_reason_row("exllamav2 is not installed", missing.value.reason)
    # Its extension compiles at import; with no CUDA compiler here, the import
    # fails the way torch's extension builder does (nvcc absent).
    monkeypatch.delitem(sys.modules, "exllamav2", raising=False)
    (tmp_path / "exllamav2" / "__init__.py").write_text(
        "raise OSError('CUDA_HOME environment variable is not set.\\n"
        "Please set it to your CUDA install root.')"
    )
    with pytest.raises(BackendUnavailable) as unbuilt:
        import_exllamav2()
    assert_reason_row("exllamav2's CUDA extension", unbuilt.value.reason)
    assert "\n" not in unbuilt.value.reason


def test_a_cache_that_does_not_fit_matches_the_vram_line() -> None:
    # 900 MiB free on the tightest GPU (no GPU here to report it), the default
    # 1024 MiB reserve: not one page fits.
    with pytest.raises(InsufficientVram) as refused:
        cache_tokens({0: 900 * MIB}, {0: 24}, 4096, 1024 * MIB, 4096)
    health = {"code": InsufficientVram.code, "message": str(refused.value)}
    error = load_failure(health)
    line = f"[{error.code}] {error.message}"
    assert doc_pattern("[INSUFFICIENT_VRAM] the worker ran out of VRAM").match(line), line


# exllamav2/attn.py decides at import whether paged attention is there, from
# flash_attn's version; this is its rule (exllamav2 0.3) without the torch and
# CUDA extension imports around it, which need a GPU.
ATTN_MODULE = """
has_flash_attn_with_paged = False
try:
    import flash_attn
    version = [int(t) for t in flash_attn.__version__.split(".") if t.isdigit()]
    has_flash_attn_with_paged = [2, 5, 7] <= version
except ModuleNotFoundError:
    pass
"""


@pytest.fixture
def stand_ins_forgotten() -> Iterator[None]:
    """The stand-ins this test imports leave sys.modules with it: a later test
    must find exllamav2 and flash_attn as absent as they are."""
    yield
    for name in [n for n in sys.modules if n.split(".")[0] in ("exllamav2", "flash_attn")]:
        del sys.modules[name]


def test_the_flash_attn_line_is_what_the_backend_logs_without_flash_attn(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    stand_ins_forgotten: None,
) -> None:
    importing(tmp_path, monkeypatch, "")
    (tmp_path / "exllamav2" / "attn.py").write_text(ATTN_MODULE)
    for name in ("exllamav2.attn", "flash_attn"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert importlib.util.find_spec("flash_attn") is None  # really absent here
    with caplog.at_level(logging.WARNING, "rbee_worker.backends.exllamav2_backend"):
        assert ExLlamaV2Backend._paged_attention() is False
    (line,) = [r.getMessage() for r in caplog.records]
    assert doc_pattern("flash-attn").fullmatch(line), line

    # With flash-attn 2.5.7 or newer importable, no such line: batching is on.
    (tmp_path / "flash_attn.py").write_text('__version__ = "2.6.3"\n')
    monkeypatch.delitem(sys.modules, "exllamav2.attn")
    caplog.clear()
    with caplog.at_level(logging.WARNING, "rbee_worker.backends.exllamav2_backend"):
        assert ExLlamaV2Backend._paged_attention() is True
    assert caplog.records == []
