"""What the user must know about the queen's own state, said where they look.

A database recovered at start, a database that refuses writes, an audit disk
running low: each is logged, published as a `notice` event, and kept here for
the `notices` of `GET /v2/nodes/status` (the banner of `nodes status`).
Recovery is also an audit entry. Outage notices are published at most once a
minute, so a burst of refused writes is one event, not one per request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from rbee_queen.audit import AuditLog
from rbee_queen.store.recovery import Recovery
from rbee_wire.queen_events import Notice

log = logging.getLogger("rbee.queen.store")

REPEAT_AFTER_S = 60.0


class Notices:
    def __init__(self, publish: Callable[[Notice], object], audit: AuditLog) -> None:
        self.publish = publish
        self.audit = audit
        self.items: dict[str, dict[str, Any]] = {}
        self._last_sent: dict[str, float] = {}

    def add(self, kind: str, level: str, message: str) -> None:
        self.items[kind] = {"kind": kind, "level": level, "message": message, "at": time.time()}
        now = time.monotonic()
        if now - self._last_sent.get(kind, -REPEAT_AFTER_S) >= REPEAT_AFTER_S:
            self._last_sent[kind] = now
            self.publish(Notice(type="notice", kind=kind, level=level, message=message))

    def clear(self, kind: str) -> None:
        self.items.pop(kind, None)
        self._last_sent.pop(kind, None)

    def recovered(self, recovery: Recovery) -> None:
        self.add("database_recovered", "error", recovery.message)
        self.audit.record(
            "store.recovered",
            moved_to=str(recovery.moved_to),
            restored_from=str(recovery.restored_from) if recovery.restored_from else None,
        )

    def store_outage(self, message: str) -> None:
        """A write was refused; the notice stays until a write succeeds again."""
        self.add("store_unavailable", "warning", message)

    def current(self) -> list[dict[str, Any]]:
        # An outage with no refused write for a while has passed: the next
        # write tries the database again, so no one has to clear it.
        stale = time.time() - REPEAT_AFTER_S
        outage = self.items.get("store_unavailable")
        if outage is not None and outage["at"] < stale:
            self.clear("store_unavailable")
        return list(self.items.values())
