"""What the server needs from an inference backend, and the values it exchanges.

A backend loads one model once, then generates for one request at a time. Both
calls block; the server runs them in threads. `generate` is a generator: it yields
text pieces as tokens are made and returns a `GenerationResult` (the value of its
StopIteration), so the true stop reason travels with the pieces.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class StopReason(StrEnum):
    MAX_TOKENS = "MAX_TOKENS"
    EOS = "EOS"
    STOP_SEQUENCE = "STOP_SEQUENCE"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int = 20
    temperature: float = 1.0  # 0 = greedy
    seed: int | None = None
    top_p: float = 1.0  # 1 = off
    top_k: int = 0  # 0 = off
    min_p: float = 0.0  # 0 = off
    repetition_penalty: float = 1.0  # 1 = off
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenerationResult:
    stop_reason: StopReason
    tokens_out: int  # tokens the model made, EOS not counted
    prompt_tokens: int = 0
    stop_sequence: str | None = None  # the stop string matched, for STOP_SEQUENCE


class ChatTemplateMissing(Exception):
    """The model's tokenizer has no chat template, so messages cannot be rendered."""


@dataclass(frozen=True)
class LoadProgress:
    stage: str  # starting | loading_tokenizer | loading_weights | warming_up | ready
    layers_loaded: int = 0
    layers_total: int = 0


ProgressCallback = Callable[[LoadProgress], None]
Generation = Generator[str, None, GenerationResult]


class LoadError(Exception):
    """The model cannot be loaded; the message is one line meant for a person."""


class VramOom(Exception):
    """The GPU ran out of memory for one request (or for a load). Raised once
    the backend has let go of what the request held, so the worker can serve
    the next one."""

    code = "VRAM_OOM"


# exllamav2's own forms: its C++ kernels throw "CUDA out of memory" (HIP on
# ROCm) as a plain RuntimeError; its auto-split loader says the model and cache
# fit on no device.
_OOM_TEXTS = ("CUDA out of memory", "HIP out of memory", "Insufficient VRAM for model and cache")


def is_vram_oom(exc: BaseException) -> bool:
    """torch's OutOfMemoryError (a RuntimeError, defined in CPU builds of torch
    too; matched by name so this module needs no torch), or one of exllamav2's
    out-of-memory RuntimeErrors. Nothing else: other RuntimeErrors stay what
    they are."""
    kind = type(exc)
    if kind.__name__ == "OutOfMemoryError" and kind.__module__.split(".")[0] == "torch":
        return True
    return isinstance(exc, RuntimeError) and any(text in str(exc) for text in _OOM_TEXTS)


class Backend(Protocol):
    @property
    def model_name(self) -> str: ...

    def load(self, progress: ProgressCallback) -> None:
        """Load the model, reporting progress; raise LoadError (or anything) on failure."""
        ...

    def generate(
        self, prompt: str, params: GenerationParams, cancel: threading.Event
    ) -> Generation:
        """Yield text pieces; stop between tokens once `cancel` is set."""
        ...

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """The prompt for these messages, by the model's own chat template;
        raise ChatTemplateMissing when it has none."""
        ...
