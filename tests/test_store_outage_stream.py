"""A stream in flight goes on while the queen's database refuses writes: a real
queen, sshd node and tiny model; another writer holds the database's lock (past
the busy timeout) from mid-stream until after the stream ended, so the worker's
idle record falls inside the outage. The stream ends with all its tokens, and
the worker's record catches up once the lock is gone."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lifecycle_support import Streaming, add_node, run_task, wait_for
from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.plugins.sshd import SshServer


@pytest.fixture
def locking_queen(rbee_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[QueenProcess]:
    monkeypatch.setenv("RBEE_DB_BUSY_TIMEOUT_MS", "300")
    monkeypatch.setenv("RBEE_HEALTH_INTERVAL", "0")
    queen = start_queen(rbee_home)
    try:
        yield queen
    finally:
        stop_queen(queen)


def recorded_state(queen: QueenProcess) -> str:
    """The worker's state as the database holds it (GET /v2/workers shows the
    in-memory request count instead); a read, which a held write lock allows."""
    with sqlite3.connect(queen.home / "queen.db") as db:
        (state,) = db.execute("SELECT state FROM workers").fetchone()
    return str(state)


def test_a_stream_in_flight_ends_normally_while_the_database_is_locked(
    locking_queen: QueenProcess, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    add_node(locking_queen, sshd, tmp_path)
    assert run_task(locking_queen, tiny_model_dir, max_tokens=2)[-1]["type"] == "end"  # warm
    stream = Streaming(locking_queen, tiny_model_dir, max_tokens=2048, temperature=0)
    assert stream.first_token.wait(60), stream.events
    wait_for(lambda: recorded_state(locking_queen) == "busy", timeout=5)
    other = sqlite3.connect(locking_queen.home / "queen.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        assert stream.ended_at is None, "the stream ended before the outage began"
        stream.join(timeout=60)
        time.sleep(0.8)  # the idle record, due 0.25 s after the stream, meets the lock
        assert recorded_state(locking_queen) == "busy"
    finally:
        other.execute("ROLLBACK")
        other.close()
    end = stream.events[-1]
    assert end["type"] == "end", stream.events[-3:]
    tokens = [e for e in stream.events if e["type"] == "token"]
    assert [t["i"] for t in tokens] == list(range(len(tokens)))  # none lost
    assert end["stop_reason"] in ("MAX_TOKENS", "EOS")
    if end["stop_reason"] == "MAX_TOKENS":
        assert end["tokens_out"] == 2048
    # The record the outage held back is written once the lock is gone.
    wait_for(lambda: recorded_state(locking_queen) == "idle", timeout=10)
    assert "Traceback" not in locking_queen.log
