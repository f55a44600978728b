"""Input validation: every field checked, every failure reported at once.

`Fields` collects `{field, constraint, message}` items; `raise_if_any` turns
them into one `InvalidRequest` (400) listing them all.
"""

from __future__ import annotations

import re
from typing import Any

from rbee_queen.errors import InvalidRequest
from rbee_wire.error_text import shown as shown  # the queen's modules take it from here
from rbee_wire.limits import LIMITS, Limit, as_integer

IDENTIFIER = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
WORKER_ID = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
HOSTNAME = re.compile(r"^[A-Za-z0-9._:-]{1,253}$")
SSH_USER = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# "@" separates a hub revision (hf:Org/Repo@rev); no ".." segment, anywhere.
MODEL_REF = re.compile(r"^(?!(?:.*[/:])?\.\.(?:[/@]|$))[A-Za-z0-9\-_/:.@]{1,512}$")
# In any name, path or reference: C0 and C1 controls (escapes, CR, LF, NUL) and
# the bidi marks that reorder what a terminal shows.
UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# Control characters other than tab, newline and CR, and Unicode bidi overrides.
_BAD_PROMPT_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069]")


class Fields:
    def __init__(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise InvalidRequest("request body must be a JSON object")
        self.body = body
        self.problems: list[dict[str, str]] = []

    def fail(self, field: str, constraint: str, message: str) -> None:
        self.problems.append({"field": field, "constraint": constraint, "message": message})

    def string(
        self,
        field: str,
        *,
        pattern: re.Pattern[str] | None = None,
        max_len: int = 4096,
        required: bool = True,
        default: str | None = None,
    ) -> str | None:
        value = self.body.get(field)
        if value is None:
            if required:
                self.fail(field, "required", f"{field} is required")
            return default
        if not isinstance(value, str) or not value:
            self.fail(field, "type", f"{field} must be a non-empty string")
            return default
        if len(value) > max_len:
            self.fail(field, "max_length", f"{field} must be at most {max_len} characters")
            return default
        if UNSAFE_CHARS.search(value):
            self.fail(field, "characters", f"{field} contains control or bidi characters")
            return default
        # fullmatch: a pattern's "$" would also match before a final newline.
        if pattern is not None and not pattern.fullmatch(value):
            self.fail(field, "pattern", f"{field} has characters that are not allowed")
            return default
        return value

    def integer(
        self, field: str, *, lo: int, hi: int, default: int | None = None, required: bool = False
    ) -> int | None:
        if required and self.body.get(field) is None:
            self.fail(field, "required", f"{field} is required")
            return default
        value: int | None = self.limited(field, Limit("integer", lo, hi, default, field), default)
        return value

    def number(self, field: str, *, lo: float, hi: float, default: float) -> float:
        value: float = self.limited(field, Limit("number", lo, hi, default, field), default)
        return value

    def limited(self, field: str, limit: Limit, default: Any = None) -> Any:
        """A number within `limit` (see rbee_wire.limits); `default` when absent or bad."""
        value = self.body.get(field)
        if value is None:
            return default
        integer = limit.kind == "integer"
        value = as_integer(value) if integer else value
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(field, "type", f"{field} must be {'an integer' if integer else 'a number'}")
            return default
        if not limit.admits(value):
            exclusive = limit.exclusive_minimum or limit.exclusive_maximum
            span = f"in {limit.span}" if exclusive else f"between {limit.low} and {limit.high}"
            self.fail(field, "range", f"{field} must be {span}")
            return default
        return value if integer else float(value)

    def boolean(self, field: str, default: bool = False) -> bool:
        value = self.body.get(field, default)
        if not isinstance(value, bool):
            self.fail(field, "type", f"{field} must be true or false")
            return default
        return value

    def string_list(
        self, field: str, *, pattern: re.Pattern[str], max_len: int, max_items: int = 256
    ) -> list[str] | None:
        """An optional list of strings, each matching `pattern`; None when absent."""
        value = self.body.get(field)
        if value is None:
            return None
        if not isinstance(value, list) or len(value) > max_items:
            self.fail(field, "type", f"{field} must be a list of at most {max_items} strings")
            return None
        if not all(
            isinstance(v, str) and len(v) <= max_len and pattern.fullmatch(v) for v in value
        ):
            self.fail(field, "pattern", f"{field} has items that are not allowed")
            return None
        return list(value)

    def prompt(self, field: str = "prompt", limit: Limit = LIMITS["prompt"]) -> str:
        value = self.body.get(field)
        if not isinstance(value, str) or not value:
            self.fail(field, "required", f"{field} must be a non-empty string")
            return ""
        if not limit.admits(value):
            self.fail(field, "max_length", f"{field} must be at most {limit.high} characters")
        elif _BAD_PROMPT_CHARS.search(value):
            self.fail(
                field,
                "characters",
                f"{field} contains control characters, escapes or bidi overrides",
            )
        return value

    def raise_if_any(self) -> None:
        if self.problems:
            names = ", ".join(p["field"] for p in self.problems)
            raise InvalidRequest(f"invalid fields: {names}", fields=self.problems)


def model_path(ref: str) -> str | None:
    """The absolute path of a `file:` reference, or None if it is not one we accept."""
    if not MODEL_REF.fullmatch(ref) or ".." in ref.split("/"):
        return None
    if ref.startswith("file:/"):
        return ref[len("file:") :]
    return None
