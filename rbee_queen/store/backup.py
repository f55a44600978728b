"""Online backups of the queen's database, through SQLite's backup API.

A copy is taken while the queen runs (readers and writers go on), into
`backups/queen-<UTC time>.db` beside the database, and only the newest `keep`
stay. The queen takes one shortly after the inventory or the model catalog
changed (a fingerprint of those rows is compared on a timer, so twenty node
adds in a burst make one backup, whatever code path wrote them) and one at
shutdown. A copy is written under a temporary name, checked with
`PRAGMA integrity_check`, and only then renamed into place: a backup that
exists is a good one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rbee_queen.store.checkpoint import truncate_wal
from rbee_queen.store.retention import HistoryRetention

log = logging.getLogger("rbee.queen.store")

PREFIX, SUFFIX = "queen-", ".db"

# What a user would rebuild by hand if it were lost; runtime state (workers,
# their events, node health) changes all the time and is not a reason to copy.
FINGERPRINT_QUERIES = (
    "SELECT name, ssh_host, ssh_port, ssh_user, ssh_key_path, install_path,"
    " worker_python, model_source, worker_access FROM nodes ORDER BY name",
    "SELECT name, model_ref, nodes, slots, device FROM models ORDER BY name",
    "SELECT node, ref, local_path, size_bytes, files, status FROM node_models ORDER BY node, ref",
)


@dataclass(frozen=True)
class BackupSettings:
    keep: int = 5  # database.backups
    check_every_s: float = 5.0  # database.backup_interval_s


def backup_dir(db_path: Path) -> Path:
    return db_path.parent / "backups"


def list_backups(directory: Path) -> list[Path]:
    """Finished backups, oldest first (the names sort by time)."""
    if not directory.is_dir():
        return []
    return sorted(
        p for p in directory.iterdir() if p.name.startswith(PREFIX) and p.suffix == SUFFIX
    )


def is_sound(path: Path) -> bool:
    """The file opens as SQLite and passes `PRAGMA integrity_check`."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True)
        try:
            rows = conn.execute("PRAGMA integrity_check").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return False
    return rows == [("ok",)]


def write_backup(db_path: Path, keep: int) -> Path:
    """Copy the live database into a new backup; prune to the newest `keep`."""
    directory = backup_dir(db_path)
    directory.mkdir(mode=0o700, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    final = directory / f"{PREFIX}{stamp}{SUFFIX}"
    partial = final.with_suffix(".partial")
    source = sqlite3.connect(str(db_path))
    try:
        target = sqlite3.connect(str(partial))
        try:
            source.backup(target)
        finally:
            target.close()
    finally:
        source.close()
    if not is_sound(partial):
        partial.unlink(missing_ok=True)
        raise sqlite3.DatabaseError(f"the backup of {db_path} failed its integrity check")
    os.chmod(partial, 0o600)
    os.replace(partial, final)
    for old in list_backups(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return final


def fingerprint(db_path: Path) -> str:
    """A hash of the inventory and catalog rows: equal hashes, nothing to back up."""
    digest = hashlib.sha256()
    conn = sqlite3.connect(f"file:{db_path}?mode=rw", uri=True)
    try:
        for query in FINGERPRINT_QUERIES:
            for row in conn.execute(query):
                digest.update(repr(row).encode())
    finally:
        conn.close()
    return digest.hexdigest()


class BackupKeeper:
    """Backs the database up after inventory or catalog changes, and at shutdown.

    SQLite only: with no file (`db_path` None, the database on PostgreSQL) it
    takes none, since the server has its own backups (pg_dump, PITR) and this
    API copies files; its timer still runs the worker history's prune."""

    def __init__(
        self,
        db_path: Path | None,
        settings: BackupSettings,
        retention: HistoryRetention | None = None,
    ) -> None:
        self.file = db_path
        self.settings = settings
        self.retention = retention  # its prune runs on this timer, on either backend
        self._seen: str | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        # The state at start is what the newest backup (or none) already holds
        # or what a restore just brought back: the first change is what counts.
        if self.file is None:
            log.info("database backups are PostgreSQL's own (pg_dump, PITR): none taken here")
        else:
            self._seen = self._fingerprint()
        self._task = asyncio.create_task(self._loop(), name="database backups")

    @property
    def db_path(self) -> Path:
        assert self.file is not None, "a PostgreSQL database is not backed up here"
        return self.file

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.check_every_s)
            if self.retention is not None:
                await asyncio.to_thread(self.retention.run_if_due)  # the history stays bounded
            if self.file is None:
                continue
            await asyncio.to_thread(self.backup_if_changed)
            await asyncio.to_thread(truncate_wal, self.db_path)  # the WAL stays short

    def backup_if_changed(self) -> Path | None:
        now = self._fingerprint()
        if now is None or now == self._seen:
            return None
        return self._backup(now)

    def _fingerprint(self) -> str | None:
        try:
            return fingerprint(self.db_path)
        except sqlite3.Error as exc:
            log.warning("database backup check failed: %s", exc)
            return None

    def _backup(self, seen: str | None) -> Path | None:
        try:
            path = write_backup(self.db_path, self.settings.keep)
        except (sqlite3.Error, OSError) as exc:  # a full disk must not stop the queen
            log.warning("database backup failed: %s", exc)
            return None
        self._seen = seen
        log.info("database backed up to %s", path)
        return path

    async def stop(self) -> None:
        """Stop the timer and take the shutdown backup."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self.file is None:
            return
        await asyncio.to_thread(self._backup, self._fingerprint())
