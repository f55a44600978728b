"""Reading inference parameters, shared by /v2/tasks and the OpenAI routes, and
the stream a request gets once routed: one place that claims, opens and relays."""

from __future__ import annotations

import secrets
from typing import Any

from rbee_queen.validation import Fields
from rbee_queen.workers.devices import BACKENDS, requested_device

MAX_STOPS = 4
MAX_STOP_CHARS = 100
ROLES = ("system", "user", "assistant", "tool")


def new_job_id() -> str:
    return f"job-{secrets.token_hex(8)}"


def sampling(f: Fields, *, max_tokens: int, temperature: float) -> dict[str, Any]:
    """Every sampling field the worker takes, checked; defaults differ by surface."""
    params: dict[str, Any] = {
        "max_tokens": f.integer("max_tokens", lo=1, hi=2048, default=max_tokens),
        "temperature": f.number("temperature", lo=0.0, hi=2.0, default=temperature),
        "top_p": f.number("top_p", lo=0.0, hi=1.0, default=1.0),
        "top_k": f.integer("top_k", lo=0, hi=1_000_000, default=0),
        "min_p": f.number("min_p", lo=0.0, hi=1.0, default=0.0),
        "repetition_penalty": f.number("repetition_penalty", lo=0.01, hi=2.0, default=1.0),
        "seed": f.integer("seed", lo=0, hi=2**63 - 1),
        "stop": stops(f),
    }
    return {k: v for k, v in params.items() if v is not None}


def device(f: Fields) -> str | None:
    """The device asked for by `backend` (cpu, cuda) and `device` (a 0-based
    ordinal), or None when neither is given (the catalog's then)."""
    backend = f.body.get("backend")
    ordinal = f.integer("device", lo=0, hi=255)
    if backend is None and ordinal is None:
        return None
    if backend is not None and backend not in BACKENDS:
        # metal too: the original listed it, but rbee has no engine for it.
        f.fail("backend", "enum", f"backend must be one of {', '.join(BACKENDS)}")
        return None
    return requested_device(backend, ordinal)


def stops(f: Fields) -> list[str] | None:
    value = f.body.get("stop")
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        f.fail("stop", "type", "stop must be a string or a list of strings")
    elif len(value) > MAX_STOPS:
        f.fail("stop", "max_items", f"stop takes at most {MAX_STOPS} strings")
    elif not all(1 <= len(v) <= MAX_STOP_CHARS for v in value):
        f.fail("stop", "length", f"each stop string must be 1..{MAX_STOP_CHARS} characters")
    else:
        return list(value)
    return None


def messages(f: Fields) -> list[dict[str, str]]:
    """Chat messages as {role, content}; OpenAI's content parts are joined as text."""
    value = f.body.get("messages")
    if not isinstance(value, list) or not 1 <= len(value) <= 256:
        f.fail("messages", "type", "messages must be a list of 1..256 messages")
        return []
    out = []
    for message in value:
        role = message.get("role") if isinstance(message, dict) else None
        content = _text_of(message.get("content")) if isinstance(message, dict) else None
        if role not in ROLES or content is None:
            roles = "|".join(ROLES)
            f.fail("messages", "shape", f"each message must be {{role: {roles}, content: text}}")
            return []
        out.append({"role": str(role), "content": content})
    return out


def _text_of(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if len(parts) == len(content) and all(isinstance(p, str) for p in parts):
            return "".join(parts)  # type: ignore[arg-type]
    return None
