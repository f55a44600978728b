"""Validation of the inference request body. Every bad field is reported, not the first."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from rbee_wire.limits import LIMITS, as_integer
from rbee_worker.backends.base import GenerationParams

JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
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
    # An int is finite however large (math.isfinite overflows past a float's range).
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


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
        elif not LIMITS["prompt"].admits(value):
            limit = LIMITS["prompt"].high
            self.fail("prompt", "max_length", f"prompt must be at most {limit} characters")
        else:
            return value
        return ""

    def bounded(self, field: str, note: str = "") -> Any:
        """A number within its limit in rbee_wire.limits; its default when absent."""
        limit = LIMITS[field]
        value: Any = self.body.get(field)
        if value is None:
            return limit.default
        integer = limit.kind == "integer"
        value = as_integer(value) if integer else value
        if not (_is_int(value) if integer else _is_number(value)):
            kind = "an integer" if integer else "a finite number"
            self.fail(field, "type", f"{field} must be {kind}{note}")
        elif not limit.admits(value):
            self.fail(field, "range", f"{field} must be {limit.span}{note}")
        else:
            return int(value) if integer else float(value)
        return limit.default

    def stop(self) -> tuple[str, ...]:
        value = self.body.get("stop")
        limit = LIMITS["stop"]
        item = limit.item or limit
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail("stop", "type", "stop must be a string or a list of strings")
        elif not limit.admits(value):
            self.fail("stop", "max_items", f"stop takes at most {limit.high} strings")
        elif not all(item.admits(v) for v in value):
            self.fail("stop", "length", f"each stop string must be {item.span} characters")
        else:
            return tuple(value)
        return ()

    def messages(self) -> list[dict[str, str]] | None:
        value = self.body.get("messages")
        if value is None:
            return None
        limit = LIMITS["messages"]
        if not isinstance(value, list) or not limit.admits(value):
            self.fail("messages", "type", f"messages must be a list of {limit.span} messages")
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
            max_tokens=check.bounded("max_tokens"),
            temperature=check.bounded("temperature"),
            seed=check.bounded("seed"),
            top_p=check.bounded("top_p"),
            top_k=check.bounded("top_k", " (0 = off)"),
            min_p=check.bounded("min_p"),
            repetition_penalty=check.bounded("repetition_penalty"),
            stop=check.stop(),
        ),
        messages=check.messages(),
    )
    if check.errors:
        raise InvalidRequest(check.errors)
    return request
