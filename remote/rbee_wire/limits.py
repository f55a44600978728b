"""Every inference request parameter's type, bounds, default and meaning, once.

The queen's validator, its OpenAPI description and the worker's check are all
built from `LIMITS`, so a value one of them accepts the others accept too.

Bounds are JSON Schema's: for "integer"/"number" they bound the value, for
"string" its length in characters, for "array" its number of items (each item
bounded by `item`). Standard library only: the worker imports this on nodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["integer", "number", "string", "array"]

# The seed is a signed 64-bit integer's non-negative half. Both backends take
# more (torch's manual_seed up to 2^64-1, exllamav2 seeds Python's random with
# any int), but OpenAI's API types the seed as int64, and so do typed clients
# (Go int64, Java long): a value above 2^63-1 would not survive them, so neither
# the queen nor the worker accepts one, and every seed one takes the other runs.
SEED_MAX = 2**63 - 1


@dataclass(frozen=True)
class Limit:
    kind: Kind
    minimum: int | float
    maximum: int | float
    default: Any
    description: str
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    item: Limit | None = None  # an array's items

    def admits(self, value: Any) -> bool:
        """Whether `value`, already of the right type, lies within the bounds."""
        size = len(value) if self.kind in ("string", "array") else value
        if isinstance(size, float) and not math.isfinite(size):
            return False
        above = size > self.minimum if self.exclusive_minimum else size >= self.minimum
        below = size < self.maximum if self.exclusive_maximum else size <= self.maximum
        return above and below

    def schema(self, default: Any = None) -> dict[str, Any]:
        """This row as JSON Schema (OpenAPI 3.1); `default` overrides the row's."""
        lo, hi = _SCHEMA_BOUNDS[self.kind]
        schema: dict[str, Any] = {"type": self.kind, "description": self.description}
        schema["exclusiveMinimum" if self.exclusive_minimum else lo] = self.minimum
        schema["exclusiveMaximum" if self.exclusive_maximum else hi] = self.maximum
        if self.item is not None:
            schema["items"] = self.item.schema()
        default = self.default if default is None else default
        if default is not None:
            schema["default"] = list(default) if isinstance(default, tuple) else default
        return schema

    @property
    def low(self) -> str:
        return _text(self.minimum)

    @property
    def high(self) -> str:
        return _text(self.maximum)

    @property
    def span(self) -> str:
        """The bounds as `lo..hi`, `>` or `<` marking an exclusive end."""
        lo = (">" if self.exclusive_minimum else "") + self.low
        hi = ("<" if self.exclusive_maximum else "") + self.high
        return f"{lo}..{hi}"


_SCHEMA_BOUNDS = {
    "integer": ("minimum", "maximum"),
    "number": ("minimum", "maximum"),
    "string": ("minLength", "maxLength"),
    "array": ("minItems", "maxItems"),
}


def as_integer(value: Any) -> int | None:
    """`value` as JSON Schema's integer, or None: like the OpenAPI description,
    a number whose fraction is zero (2.0) counts, a boolean does not."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) else None


def _text(bound: int | float) -> str:
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


STOP_STRING = Limit("string", 1, 100, None, "one stop sequence")

LIMITS: dict[str, Limit] = {
    "max_tokens": Limit("integer", 1, 2048, 20, "tokens to generate at most"),
    "temperature": Limit("number", 0.0, 2.0, 1.0, "softmax temperature; 0 is greedy"),
    "top_p": Limit(
        "number", 0.0, 1.0, 1.0, "keep the likeliest tokens holding this mass (1 = off)"
    ),
    "top_k": Limit("integer", 0, 1_000_000, 0, "keep only the k likeliest tokens (0 = off)"),
    "min_p": Limit(
        "number", 0.0, 1.0, 0.0, "drop tokens under min_p x the top probability (0 = off)"
    ),
    # Not down to 0: the penalty divides logits, and a tiny one makes them inf.
    "repetition_penalty": Limit(
        "number", 0.01, 2.0, 1.0, "divides seen tokens' positive logits (1 = off)"
    ),
    "seed": Limit("integer", 0, SEED_MAX, None, "fixes sampling's randomness (none = random)"),
    "stop": Limit("array", 0, 4, (), "generation ends before any of these", item=STOP_STRING),
    "prompt": Limit("string", 1, 100_000, None, "the text to continue"),
    "messages": Limit("array", 1, 256, None, "chat messages, rendered by the model's template"),
    "device": Limit("integer", 0, 255, None, "the 0-based ordinal of the backend's device"),
}

# max_tokens and temperature default differently on each queen surface (the
# OpenAI routes follow OpenAI's defaults); the worker's own are LIMITS'.
SURFACE_DEFAULTS: dict[str, dict[str, Any]] = {
    "tasks": {"max_tokens": 20, "temperature": 0.7},
    "completions": {"max_tokens": 16, "temperature": 1.0},
    "chat": {"max_tokens": 256, "temperature": 1.0},
}
