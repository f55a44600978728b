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
    CANCELLED = "CANCELLED"


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int = 20
    temperature: float = 1.0  # 0 = greedy
    seed: int | None = None


@dataclass(frozen=True)
class GenerationResult:
    stop_reason: StopReason
    tokens_out: int  # tokens the model made, EOS not counted


@dataclass(frozen=True)
class LoadProgress:
    stage: str  # starting | loading_tokenizer | loading_weights | warming_up | ready
    layers_loaded: int = 0
    layers_total: int = 0


ProgressCallback = Callable[[LoadProgress], None]
Generation = Generator[str, None, GenerationResult]


class LoadError(Exception):
    """The model cannot be loaded; the message is one line meant for a person."""


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
