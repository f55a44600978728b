"""A watch on the audit log's disk: a warning before it fills, never a blocked request.

Audit entries are written on the path of requests; a full disk would make
them fail. This checks the free space of the audit folder on a timer, off
the request path, and when it falls below the threshold publishes a
`notice` (kind `audit_disk_low`, shown by `nodes status` too) and counts the
warning in `rbee_audit_disk_low_warnings`; the free bytes themselves are
`rbee_queen_disk_free_bytes{volume="audit_log"}`.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter

from rbee_queen.store.notices import Notices

KIND = "audit_disk_low"


@dataclass(frozen=True)
class AuditDiskSettings:
    min_free_bytes: int = 100 * 1024 * 1024  # audit.min_free_mb
    check_every_s: float = 30.0  # audit.disk_check_s


class AuditDiskWatch:
    def __init__(
        self,
        directory: Path,
        notices: Notices,
        registry: CollectorRegistry,
        settings: AuditDiskSettings,
    ) -> None:
        self.directory = directory
        self.notices = notices
        self.settings = settings
        self.warnings = Counter(
            "rbee_audit_disk_low_warnings",
            "Checks that found the audit log's disk below its free-space threshold",
            registry=registry,
        )
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="audit disk watch")

    async def _loop(self) -> None:
        while True:
            await asyncio.to_thread(self.check)
            await asyncio.sleep(self.settings.check_every_s)

    def check(self) -> bool:
        """Whether the disk is low now; warns (event, metric) when it is."""
        try:
            free = shutil.disk_usage(self.directory).free
        except OSError:
            return False
        if free >= self.settings.min_free_bytes:
            self.notices.clear(KIND)
            return False
        self.warnings.inc()
        self.notices.add(
            KIND,
            "warning",
            f"the audit log's disk has {free // 2**20} MiB free (threshold "
            f"{self.settings.min_free_bytes // 2**20} MiB) under {self.directory}: free space "
            "or move RBEE_HOME; requests are not held up, but entries will fail when it fills",
        )
        return True

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
