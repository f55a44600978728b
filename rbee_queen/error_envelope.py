"""An error envelope, as the API renders it, turned back into the queen's exception.

The keeper's client uses it so commands see the same `RbeeError` subclasses the
queen raised; an unknown code stays an `RbeeError` carrying that code.
"""

from __future__ import annotations

from typing import Any

from rbee_queen.errors import RbeeError


def _all_subclasses(cls: type[RbeeError]) -> list[type[RbeeError]]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found


def from_envelope(status: int, body: Any) -> RbeeError:
    """Turn an error envelope (as rendered by the API) back into an exception."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return RbeeError(f"HTTP {status} without an error envelope")
    code = str(error.get("code", "INTERNAL_ERROR"))
    message = str(error.get("message", code))
    details = error.get("details") or {}
    classes: list[type[RbeeError]] = [RbeeError, *_all_subclasses(RbeeError)]
    for cls in classes:
        if cls.code == code:
            return cls(message, **details)
    generic = RbeeError(message, **details)
    generic.code = code  # type: ignore[misc]
    return generic
