"""Reading inference parameters, shared by /v2/tasks and the OpenAI routes, and
the stream a request gets once routed: one place that claims, opens and relays."""

from __future__ import annotations

import os
from typing import Any

from rbee_queen.validation import Fields
from rbee_queen.workers.devices import BACKENDS, requested_device
from rbee_wire.limits import LIMITS, SURFACE_DEFAULTS

ROLES = ("system", "user", "assistant", "tool")
# The sampling fields the worker takes, each checked against rbee_wire.limits.
SAMPLED = ("max_tokens", "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "seed")


def new_job_id() -> str:
    return f"job-{os.urandom(8).hex()}"  # secrets.token_hex(8), in one call


def sampling(f: Fields, surface: str) -> dict[str, Any]:
    """Every sampling field the worker takes, checked; `surface` (tasks,
    completions, chat) picks its defaults from the limits table."""
    defaults = SURFACE_DEFAULTS[surface]
    params = {
        name: f.limited(name, LIMITS[name], defaults.get(name, LIMITS[name].default))
        for name in SAMPLED
    }
    params["stop"] = stops(f)
    return {k: v for k, v in params.items() if v is not None}


def device(f: Fields) -> str | None:
    """The device asked for by `backend` (cpu, cuda) and `device` (a 0-based
    ordinal), or None when neither is given (the catalog's then)."""
    backend = f.body.get("backend")
    ordinal = f.limited("device", LIMITS["device"])
    if backend is None and ordinal is None:
        return None
    if backend is not None and backend not in BACKENDS:
        # metal too: the original listed it, but rbee has no engine for it.
        f.fail("backend", "enum", f"backend must be one of {', '.join(BACKENDS)}")
        return None
    return requested_device(backend, ordinal)


def stops(f: Fields) -> list[str] | None:
    value = f.body.get("stop")
    limit = LIMITS["stop"]
    item = limit.item or limit
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        f.fail("stop", "type", "stop must be a string or a list of strings")
    elif not limit.admits(value):
        f.fail("stop", "max_items", f"stop takes at most {limit.high} strings")
    elif not all(item.admits(v) for v in value):
        f.fail("stop", "length", f"each stop string must be {item.span} characters")
    else:
        return list(value)
    return None


def messages(f: Fields) -> list[dict[str, str]]:
    """Chat messages as {role, content}; OpenAI's content parts are joined as text."""
    value = f.body.get("messages")
    limit = LIMITS["messages"]
    if not isinstance(value, list) or not limit.admits(value):
        f.fail("messages", "type", f"messages must be a list of {limit.span} messages")
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
