"""How long the worker history is kept, so a long-running queen's database
does not grow with its traffic.

Every busy and idle spell of a worker is a row of `worker_events`: dozens a
minute under steady traffic, for good. Kept:

- a busy or idle spell (`idle -> busy`, `busy -> idle`) for
  `database.history_keep_s` (a day by default);
- every other row of a worker that is not stopped (started, loaded, failed,
  hung, restarted, OOM...) for as long as the worker lives;
- a stopped worker's whole history for `database.stopped_workers_keep_s`
  after it stopped (a week by default), then it goes; so does the history of
  a worker whose row went with its node. The worker's own row stays (it
  carries the VRAM a load measured, which later starts use).

The prune runs on the backup keeper's timer, at most once a minute, in
batches of a few hundred rows: the rows to go are found first (a read, which
never blocks a writer), then deleted by primary key, one short write each, so
the queen's own writes never wait long behind it. Plain peewee queries, so the
same code runs on SQLite and on PostgreSQL. SQLite reuses the pages freed, so
once the prune keeps up the file stops growing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from peewee import DatabaseError, Expression, Field, Select

from rbee_queen.store.tables import Worker, WorkerEvent, utcnow

log = logging.getLogger("rbee.queen.store")

# The worker states a busy or idle spell moves between (workers/states.py; the
# store sits below the worker core, so they are named here as stored).
IDLE, BUSY, STOPPED = "idle", "busy", "stopped"
# The history's implicit auto-increment key: rows are numbered in the order written.
EVENT_ID: Field = WorkerEvent._meta.primary_key  # type: ignore[attr-defined,assignment]


@dataclass(frozen=True)
class RetentionSettings:
    history_keep_s: float = 86400.0  # database.history_keep_s
    stopped_workers_keep_s: float = 7 * 86400.0  # database.stopped_workers_keep_s
    every_s: float = 60.0  # how often the prune runs
    batch: int = 500  # rows per delete (below SQLite's 999 bound variables)
    max_batches: int = 40  # per run; a larger backlog goes over the next runs


@dataclass(frozen=True)
class Pruned:
    spells: int  # busy and idle spells past history_keep_s
    stopped: int  # rows of workers stopped (or removed) past stopped_workers_keep_s


def is_spell() -> Expression:
    return ((WorkerEvent.from_state == IDLE) & (WorkerEvent.to_state == BUSY)) | (
        (WorkerEvent.from_state == BUSY) & (WorkerEvent.to_state == IDLE)
    )


def older_than(cutoff: datetime) -> Expression:
    """Rows recorded before `cutoff`. Rows are written in time order, so the id
    of the first row at or after it bounds the search to the table's old end
    (no index on `at` needed; nothing is deleted at or past that id)."""
    first_recent = (
        WorkerEvent.select(EVENT_ID)
        .where(WorkerEvent.at >= cutoff)
        .order_by(EVENT_ID)
        .limit(1)
        .scalar()
    )
    old = WorkerEvent.at < cutoff
    return old if first_recent is None else old & (EVENT_ID < first_recent)


def gone_workers(cutoff: datetime) -> Expression:
    """Rows of workers stopped before `cutoff`, or whose row is gone (removed
    with their node) and recorded before it."""
    stopped = Worker.select(Worker.worker_id).where(
        (Worker.state == STOPPED) & (Worker.updated_at < cutoff)
    )
    orphaned = WorkerEvent.worker_id.not_in(Worker.select(Worker.worker_id)) & older_than(cutoff)
    return WorkerEvent.worker_id.in_(stopped) | orphaned


def delete_in_batches(where: Expression, settings: RetentionSettings) -> int:
    """Delete the rows `where` selects, a batch at a time; the rows deleted."""
    deleted = 0
    for _ in range(settings.max_batches):
        found: Select = (
            WorkerEvent.select(EVENT_ID).where(where).order_by(EVENT_ID).limit(settings.batch)
        )
        ids = [row_id for (row_id,) in found.tuples()]
        if not ids:
            break
        deleted += WorkerEvent.delete().where(EVENT_ID.in_(ids)).execute()
        if len(ids) < settings.batch:
            break
    return deleted


def prune_history(settings: RetentionSettings, now: datetime | None = None) -> Pruned:
    """One pass of the retention rules above; safe to run from any thread (it
    opens, and then closes, that thread's connection if it has none)."""
    now = now or utcnow()
    db = WorkerEvent._meta.database  # type: ignore[attr-defined]
    opened = db.is_closed()
    if opened:
        db.connect()
    try:
        spells_cutoff = now - timedelta(seconds=settings.history_keep_s)
        stopped_cutoff = now - timedelta(seconds=settings.stopped_workers_keep_s)
        spells = delete_in_batches(is_spell() & older_than(spells_cutoff), settings)
        stopped = delete_in_batches(gone_workers(stopped_cutoff), settings)
    finally:
        if opened:
            db.close()
    return Pruned(spells, stopped)


class HistoryRetention:
    """Runs the prune when it is due; called on every tick of the backup
    keeper's timer, which may be every few seconds."""

    def __init__(
        self, settings: RetentionSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._last: float | None = None

    def run_if_due(self) -> Pruned | None:
        now = self._clock()
        if self._last is not None and now - self._last < self.settings.every_s:
            return None
        self._last = now
        try:
            pruned = prune_history(self.settings)
        except DatabaseError as exc:  # a lock or an outage: the next run tries again
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            log.warning("worker history prune skipped: %s", reason)
            return None
        except Exception:  # a bug: logged with its traceback, the timer goes on
            log.exception("worker history prune failed")
            return None
        if pruned.spells or pruned.stopped:
            log.info(
                "worker history pruned: %d busy/idle spells, %d rows of stopped workers",
                pruned.spells,
                pruned.stopped,
            )
        return pruned
