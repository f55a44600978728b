"""The queen's notices about itself reach the dashboard: a database restored at
start is in the snapshot a real queen sends, and the fleet screen shows it as
a banner line under the totals. The queue shows there too while requests wait."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rbee_keeper.tui.fleet import Fleet
from rbee_keeper.tui.widgets import Totals
from rbee_queen.store.backup import write_backup
from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.test_dashboard_helpers import app_with, settle
from tests.test_store_recovery import damage, seed_node


def first_event(queen: QueenProcess) -> dict[str, Any]:
    with queen.client() as c, c.stream("GET", "/v2/events") as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                event: dict[str, Any] = json.loads(line[6:])
                return event
    raise AssertionError("no event")


def restored_queen_snapshot(rbee_home: Path) -> dict[str, Any]:
    db_path = rbee_home / "queen.db"
    seed_node(db_path, "kept")
    write_backup(db_path, keep=5)
    damage(db_path)
    queen = start_queen(rbee_home)
    try:
        return first_event(queen)
    finally:
        stop_queen(queen)


async def test_a_restored_database_is_a_banner_on_the_fleet_screen(rbee_home: Path) -> None:
    snapshot = restored_queen_snapshot(rbee_home)
    assert snapshot["type"] == "snapshot"
    assert [n["kind"] for n in snapshot["notices"]] == ["database_recovered"]
    app = app_with([snapshot], queen_url="http://q:8080")
    async with app.run_test(size=(140, 40)) as pilot:
        totals = app.screen.query_one(Totals)
        await settle(pilot, app, lambda: "!!" in str(totals.render()))
        text = str(totals.render())
        assert "connected to http://q:8080" in text
        assert "!! " in text and "restored" in text


def test_a_notice_event_joins_the_fleet_and_a_new_snapshot_replaces_them() -> None:
    fleet = Fleet()
    fleet.apply({"type": "snapshot", "nodes": [], "workers": [], "notices": []})
    assert fleet.notices == {}
    fleet.apply({"type": "notice", "kind": "store_unavailable", "level": "warning", "message": "m"})
    assert list(fleet.notices) == ["store_unavailable"]
    fleet.apply({"type": "snapshot", "nodes": [], "workers": [], "notices": []})
    assert fleet.notices == {}  # the queen's word on reconnect is the whole truth


async def test_the_totals_show_the_queue_only_while_requests_wait() -> None:
    snapshot = {"type": "snapshot", "nodes": [], "workers": [], "notices": []}
    queued = {"type": "request_queued", "job_id": "j-1", "model": "file:/m", "depth": 2}
    app = app_with([snapshot, queued], queen_url="http://q:8080")
    async with app.run_test(size=(140, 40)) as pilot:
        totals = app.screen.query_one(Totals)
        await settle(pilot, app, lambda: "queued 2" in str(totals.render()))
    idle = app_with([snapshot], queen_url="http://q:8080")
    async with idle.run_test(size=(140, 40)) as pilot:
        totals = idle.screen.query_one(Totals)
        await settle(pilot, idle, lambda: "connected" in str(totals.render()))
        assert "queued" not in str(totals.render())
