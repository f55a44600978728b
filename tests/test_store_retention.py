"""The worker history's retention: the real prune on a real SQLite file and on
a real PostgreSQL database (tests/plugins/postgres.py), then on the backup
keeper's timer as the queen runs it."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from peewee import Database

from rbee_queen.store.backup import BackupKeeper, BackupSettings
from rbee_queen.store.retention import (
    HistoryRetention,
    Pruned,
    RetentionSettings,
    prune_history,
)
from rbee_queen.store.tables import Node, Worker, WorkerEvent, utcnow
from tests.plugins.postgres import StoreTarget

DAY = 86400.0
# Small batches, so a prune of a few rows goes through several of them.
SETTINGS = RetentionSettings(history_keep_s=DAY, stopped_workers_keep_s=7 * DAY, batch=2)
LIFECYCLE = [(None, "spawning"), ("spawning", "loading"), ("loading", "idle")]
SPELL = [("idle", "busy"), ("busy", "idle")]


@pytest.fixture
def store(store_target: StoreTarget) -> Iterator[Database]:
    db = store_target.open()
    Node.create(name="n1", ssh_host="h", ssh_user="u", ssh_key_path="/k", install_path="/i")
    try:
        yield db
    finally:
        db.close()


def worker(worker_id: str, state: str, updated_days_ago: float = 0) -> None:
    at = utcnow() - timedelta(days=updated_days_ago)
    Worker.create(worker_id=worker_id, node="n1", model_ref="file:/m", state=state, updated_at=at)


def record(worker_id: str, moves: list[tuple[str | None, str]], days_ago: float) -> None:
    at = utcnow() - timedelta(days=days_ago)
    for i, (was, to) in enumerate(moves):
        WorkerEvent.create(
            worker_id=worker_id, from_state=was, to_state=to, at=at + timedelta(seconds=i)
        )


def history(worker_id: str) -> list[tuple[str | None, str]]:
    rows = WorkerEvent.select().where(WorkerEvent.worker_id == worker_id).order_by(WorkerEvent.at)
    return [(e.from_state, e.to_state) for e in rows]


def test_old_spells_go_and_lifecycle_rows_and_recent_spells_stay(store: Database) -> None:
    worker("w-live", "idle")
    record("w-live", LIFECYCLE, days_ago=3)
    record("w-live", SPELL * 3, days_ago=2.2)  # past the day's keep
    record("w-live", [("idle", "hung"), ("hung", "killing"), ("killing", "restarting")], 2.1)
    record("w-live", [("restarting", "spawning"), *LIFECYCLE[1:]], days_ago=2)
    record("w-live", SPELL, days_ago=0.5)  # within it
    assert prune_history(SETTINGS) == Pruned(spells=6, stopped=0)
    assert history("w-live") == [
        *LIFECYCLE,
        ("idle", "hung"),
        ("hung", "killing"),
        ("killing", "restarting"),
        ("restarting", "spawning"),
        *LIFECYCLE[1:],
        *SPELL,
    ]
    assert prune_history(SETTINGS) == Pruned(0, 0)  # nothing left to go


def test_a_stopped_workers_history_goes_after_its_own_keep(store: Database) -> None:
    stop = [("idle", "draining"), ("draining", "stopped")]
    worker("w-failed", "failed", updated_days_ago=30)  # not stopped: its rows stay
    record("w-failed", [*LIFECYCLE, ("idle", "failed")], days_ago=30)
    worker("w-long-gone", "stopped", updated_days_ago=8)
    record("w-long-gone", [*LIFECYCLE, *stop], days_ago=9)
    record("w-removed", [*LIFECYCLE, *SPELL], days_ago=8)  # its node (and row) removed
    worker("w-lately", "stopped", updated_days_ago=2)
    record("w-lately", [*LIFECYCLE, *SPELL, *stop], days_ago=2)
    record("w-removed-lately", LIFECYCLE, days_ago=1)
    assert prune_history(SETTINGS) == Pruned(spells=4, stopped=5 + 3)
    assert history("w-long-gone") == []
    assert Worker.get_by_id("w-long-gone").state == "stopped"  # the row (its VRAM) stays
    assert history("w-lately") == [*LIFECYCLE, *stop]
    assert history("w-failed") == [*LIFECYCLE, ("idle", "failed")]
    assert history("w-removed") == []
    assert history("w-removed-lately") == LIFECYCLE


def test_a_large_backlog_goes_over_several_runs(store: Database) -> None:
    worker("w-busy", "busy")
    record("w-busy", SPELL * 10, days_ago=2)
    few = RetentionSettings(history_keep_s=DAY, batch=3, max_batches=2)
    for _ in range(3):
        assert prune_history(few).spells == 6  # two batches of three, then the run ends
    assert prune_history(few).spells == 2
    assert history("w-busy") == []


def test_a_locked_database_skips_a_run_and_the_next_one_prunes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = StoreTarget(tmp_path / "queen.db").open(busy_timeout_ms=50)
    try:
        Node.create(name="n1", ssh_host="h", ssh_user="u", ssh_key_path="/k", install_path="/i")
        worker("w-1", "idle")
        record("w-1", SPELL, days_ago=2)
        ticks = iter([0.0, 1.0, 60.0])
        retention = HistoryRetention(RetentionSettings(every_s=60), clock=lambda: next(ticks))
        other = sqlite3.connect(str(tmp_path / "queen.db"), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        with caplog.at_level(logging.WARNING, logger="rbee.queen.store"):
            assert retention.run_if_due() is None
        assert "worker history prune skipped: database is locked" in caplog.text
        other.execute("ROLLBACK")
        other.close()
        assert retention.run_if_due() is None  # not due yet: a minute between runs
        assert len(history("w-1")) == 2
        assert retention.run_if_due() == Pruned(spells=2, stopped=0)
    finally:
        db.close()


def test_the_backup_timer_prunes_on_either_backend(
    store: Database, store_target: StoreTarget
) -> None:
    """On PostgreSQL the keeper takes no backups, but its timer still prunes."""
    worker("w-1", "idle")
    record("w-1", [*LIFECYCLE, *SPELL], days_ago=2)
    file = store_target.location if isinstance(store_target.location, Path) else None
    retention = WatchedRetention(RetentionSettings(history_keep_s=DAY, every_s=0))
    keeper = BackupKeeper(file, BackupSettings(check_every_s=0.05), retention)

    async def until_pruned() -> bool:
        keeper.start()
        try:
            return await asyncio.to_thread(retention.pruned.wait, 10)
        finally:
            await keeper.stop()

    assert asyncio.run(until_pruned())
    assert history("w-1") == LIFECYCLE


class WatchedRetention(HistoryRetention):
    """The queen's retention, telling the test when a run pruned something."""

    def __init__(self, settings: RetentionSettings) -> None:
        super().__init__(settings)
        self.pruned = threading.Event()

    def run_if_due(self) -> Pruned | None:
        result = super().run_if_due()
        if result is not None and result.spells:
            self.pruned.set()
        return result


def test_rows_written_in_time_order_bound_the_search(store: Database) -> None:
    """A spell recorded before the cutoff but after a recent row (a clock set
    back) waits for that row to age; nothing recent is ever deleted."""
    worker("w-1", "idle")
    record("w-1", SPELL, days_ago=2)
    record("w-1", [("idle", "draining")], days_ago=0)
    record("w-1", SPELL, days_ago=3)  # written after a recent row
    assert prune_history(SETTINGS).spells == 2
    assert history("w-1") == [*SPELL, ("idle", "draining")]
    later = utcnow() + timedelta(days=2)
    assert prune_history(SETTINGS, now=later).spells == 2
    assert history("w-1") == [("idle", "draining")]


def test_times_compare_as_times(store: Database) -> None:
    """The stored times order like the times they are (microseconds or none)."""
    worker("w-1", "idle")
    exact = datetime.fromisoformat("2026-01-01T00:00:00+00:00")
    WorkerEvent.create(worker_id="w-1", from_state="idle", to_state="busy", at=exact)
    now = exact + timedelta(seconds=DAY, microseconds=500)
    assert prune_history(SETTINGS, now=now).spells == 1
