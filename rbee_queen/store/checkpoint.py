"""Keeping the SQLite write-ahead log short.

SQLite checkpoints the WAL by itself once it holds 1000 pages, but never
shrinks the file: under steady traffic the WAL grows to about 4 MB and stays
there, so the database on disk grows for minutes before it levels off. A
`wal_checkpoint(TRUNCATE)` every few seconds (the backup keeper's timer) copies
the log into the main file and cuts it to zero bytes, so the file set stays
the size of its rows.

The checkpoint runs on its own connection with no busy wait: when a reader or
writer holds the log it gives up at once and the next tick tries again, so it
never holds up the queen's own writes for more than the copy itself (a few
seconds' worth of pages). SQLite only.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

log = logging.getLogger("rbee.queen.store")


def truncate_wal(db_path: Path) -> bool:
    """Checkpoint the whole WAL into the database and truncate it; False when
    another connection was in the way (nothing waited for) or it failed."""
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=rw", uri=True, timeout=0)
        try:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:  # a locked or full disk: the next tick tries again
        log.debug("WAL checkpoint skipped: %s", exc)
        return False
    return busy == 0
