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
REPETITION_PENALTY_LIMIT = 2.0
MAX_STOPS = 4
MAX_STOP_CHARS = 100
MAX_MESSAGES = 256
ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class FieldError:
    field: str
    constraint: str
    message: str


class InvalidRequest(Exception):
    def __init__(self, fields: list[FieldError]) -> None:
        # One line that says what is wrong: the owner relays it to a person as is.
        super().__init__("; ".join(f.message for f in fields) or "invalid request")
        self.fields = fields


@dataclass(frozen=True)
class InferenceRequest:
    job_id: str
    prompt: str  # empty when messages are given: the chat template makes the prompt
    params: GenerationParams
    messages: list[dict[str, str]] | None = None


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
            if self.body.get("messages") is None:
                self.fail("prompt", "required", "prompt or messages is required")
        elif self.body.get("messages") is not None:
            self.fail("prompt", "exclusive", "send prompt or messages, not both")
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

    def fraction(self, field: str, default: float) -> float:
        value = self.body.get(field)
        if value is None:
            return default
        if not _is_number(value):
            self.fail(field, "type", f"{field} must be a finite number")
        elif not 0 <= value <= 1:
            self.fail(field, "range", f"{field} must be 0..1")
        else:
            return float(value)
        return default

    def top_k(self) -> int:
        value = self.body.get("top_k")
        if value is None:
            return GenerationParams.top_k
        if not _is_int(value):
            self.fail("top_k", "type", "top_k must be an integer (0 = off)")
        elif value < 0:
            self.fail("top_k", "range", "top_k must be 0 or more (0 = off)")
        else:
            return int(value)
        return 0

    def repetition_penalty(self) -> float:
        value = self.body.get("repetition_penalty")
        if value is None:
            return GenerationParams.repetition_penalty
        if not _is_number(value):
            self.fail("repetition_penalty", "type", "repetition_penalty must be a finite number")
        elif not 0 < value <= REPETITION_PENALTY_LIMIT:
            limit = f"{REPETITION_PENALTY_LIMIT:g}"
            self.fail("repetition_penalty", "range", f"repetition_penalty must be >0..{limit}")
        else:
            return float(value)
        return 1.0

    def stop(self) -> tuple[str, ...]:
        value = self.body.get("stop")
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail("stop", "type", "stop must be a string or a list of strings")
        elif len(value) > MAX_STOPS:
            self.fail("stop", "max_items", f"stop takes at most {MAX_STOPS} strings")
        elif not all(1 <= len(v) <= MAX_STOP_CHARS for v in value):
            self.fail("stop", "length", f"each stop string must be 1..{MAX_STOP_CHARS} characters")
        else:
            return tuple(value)
        return ()

    def messages(self) -> list[dict[str, str]] | None:
        value = self.body.get("messages")
        if value is None:
            return None
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_MESSAGES:
            self.fail("messages", "type", f"messages must be a list of 1..{MAX_MESSAGES} messages")
            return None
        for message in value:
            ok = (
                isinstance(message, dict)
                and message.get("role") in ROLES
                and isinstance(message.get("content"), str)
            )
            if not ok:
                roles = "|".join(ROLES)
                self.fail("messages", "shape", f"each message must be {{role: {roles}, content}}")
                return None
        return [{"role": m["role"], "content": m["content"]} for m in value]


def parse_inference(body: Any) -> InferenceRequest:
    """Check a decoded JSON body; unknown fields are ignored. Raises InvalidRequest."""
    if not isinstance(body, dict):
        raise InvalidRequest([FieldError("body", "type", "the body must be a JSON object")])
    check = _Checker(body)
    request = InferenceRequest(
        job_id=check.job_id(),
        prompt=check.prompt(),
        params=GenerationParams(
            max_tokens=check.max_tokens(),
            temperature=check.temperature(),
            seed=check.seed(),
            top_p=check.fraction("top_p", GenerationParams.top_p),
            top_k=check.top_k(),
            min_p=check.fraction("min_p", GenerationParams.min_p),
            repetition_penalty=check.repetition_penalty(),
            stop=check.stop(),
        ),
        messages=check.messages(),
    )
    if check.errors:
        raise InvalidRequest(check.errors)
    return request
