"""Validation of the inference request body. Every bad field is reported, not the first."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from rbee_worker.backends.base import GenerationParams

JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
MAX_TOKENS_LIMIT = 2048
TEMPERATURE_LIMIT = 2.0
SEED_LIMIT = 2**64 - 1  # what torch.Generator.manual_seed accepts


@dataclass(frozen=True)
class FieldError:
    field: str
    constraint: str
    message: str


class InvalidRequest(Exception):
    def __init__(self, fields: list[FieldError]) -> None:
        names = ", ".join(dict.fromkeys(f.field for f in fields))
        super().__init__(f"invalid request: {names}")
        self.fields = fields


@dataclass(frozen=True)
class InferenceRequest:
    job_id: str
    prompt: str
    params: GenerationParams


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not 1


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


class _Checker:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.errors: list[FieldError] = []

    def fail(self, field: str, constraint: str, message: str) -> None:
        self.errors.append(FieldError(field, constraint, message))

    def job_id(self) -> str:
        value = self.body.get("job_id")
        if value is None:
            self.fail("job_id", "required", "job_id is required")
        elif not isinstance(value, str):
            self.fail("job_id", "type", "job_id must be a string")
        elif not JOB_ID.match(value):
            self.fail("job_id", "pattern", "job_id must be 1-256 characters of A-Z a-z 0-9 _ -")
        else:
            return value
        return ""

    def prompt(self) -> str:
        value = self.body.get("prompt")
        if value is None:
            self.fail("prompt", "required", "prompt is required")
        elif not isinstance(value, str):
            self.fail("prompt", "type", "prompt must be a string")
        elif not value:
            self.fail("prompt", "min_length", "prompt must not be empty")
        else:
            return value
        return ""

    def max_tokens(self) -> int:
        value = self.body.get("max_tokens")
        if value is None:
            return GenerationParams.max_tokens
        if not _is_int(value):
            self.fail("max_tokens", "type", "max_tokens must be an integer")
        elif not 1 <= value <= MAX_TOKENS_LIMIT:
            self.fail("max_tokens", "range", f"max_tokens must be 1..{MAX_TOKENS_LIMIT}")
        else:
            return int(value)
        return 1

    def temperature(self) -> float:
        value = self.body.get("temperature")
        if value is None:
            return GenerationParams.temperature
        if not _is_number(value):
            self.fail("temperature", "type", "temperature must be a finite number")
        elif not 0 <= value <= TEMPERATURE_LIMIT:
            self.fail("temperature", "range", f"temperature must be 0..{TEMPERATURE_LIMIT:g}")
        else:
            return float(value)
        return 0.0

    def seed(self) -> int | None:
        value = self.body.get("seed")
        if value is None:
            return None
        if not _is_int(value):
            self.fail("seed", "type", "seed must be an integer")
        elif not 0 <= value <= SEED_LIMIT:
            self.fail("seed", "range", "seed must be 0..2^64-1")
        else:
            return int(value)
        return None


def parse_inference(body: Any) -> InferenceRequest:
    """Check a decoded JSON body; unknown fields are ignored. Raises InvalidRequest."""
    if not isinstance(body, dict):
        raise InvalidRequest([FieldError("body", "type", "the body must be a JSON object")])
    check = _Checker(body)
    request = InferenceRequest(
        job_id=check.job_id(),
        prompt=check.prompt(),
        params=GenerationParams(
            max_tokens=check.max_tokens(), temperature=check.temperature(), seed=check.seed()
        ),
    )
    if check.errors:
        raise InvalidRequest(check.errors)
    return request
