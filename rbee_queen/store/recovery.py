"""Recovery at start: a database that cannot be trusted is set aside, never deleted.

A `queen.db` that does not open as SQLite or fails `PRAGMA integrity_check` is
renamed `queen.db.corrupt-<UTC time>` (its -wal and -shm files with it), and the
newest backup that passes the same check is copied into its place. With no
good backup the queen starts empty and the report says where the bad file is
and what to do. The queen tells the user everywhere they look: the log, an
event, an audit entry and a notice on `nodes status` and the dashboard.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rbee_queen.store.backup import backup_dir, is_sound, list_backups

log = logging.getLogger("rbee.queen.store")


@dataclass(frozen=True)
class Recovery:
    """What recovery did: where the bad file went and what replaced it."""

    moved_to: Path
    restored_from: Path | None

    @property
    def message(self) -> str:
        if self.restored_from is not None:
            return (
                f"the database failed its integrity check; it was moved to {self.moved_to} "
                f"and the backup {self.restored_from.name} restored: changes made after "
                "that backup are missing"
            )
        return (
            f"the database failed its integrity check and no good backup exists; it was "
            f"moved to {self.moved_to} and the queen started empty: re-add the nodes "
            "(rbee-keeper setup import FILE, from an earlier setup export), or try "
            f"`sqlite3 {self.moved_to} .recover` to salvage rows"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": "database_recovered",
            "moved_to": str(self.moved_to),
            "restored_from": str(self.restored_from) if self.restored_from else None,
            "message": self.message,
        }


def recover_if_damaged(db_path: Path) -> Recovery | None:
    """Set a damaged database aside and restore the newest good backup; None
    when the file is sound or does not exist yet."""
    if not db_path.exists() or is_sound(db_path):
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    moved_to = db_path.with_name(f"{db_path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        part = db_path.with_name(db_path.name + suffix)
        if part.exists():
            os.replace(part, moved_to.with_name(moved_to.name + suffix))
    restored = newest_sound_backup(backup_dir(db_path))
    if restored is not None:
        shutil.copyfile(restored, db_path)
        os.chmod(db_path, 0o600)
    recovery = Recovery(moved_to, restored)
    log.error("%s", recovery.message)
    return recovery


def newest_sound_backup(directory: Path) -> Path | None:
    for candidate in reversed(list_backups(directory)):
        if is_sound(candidate):
            return candidate
        log.warning("backup %s failed its integrity check; trying an older one", candidate)
    return None
