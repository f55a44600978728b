"""The list views print times as a person reads them (`3 min ago`); `--json`
keeps the queen's ISO times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rbee_keeper.output import ago

NOW = datetime(2026, 11, 24, 20, 30, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (2, "just now"),
        (42, "42 s ago"),
        (209.5, "3 min ago"),
        (2 * 3600 + 59 * 60, "2 h ago"),
        (86400 + 5, "1 day ago"),
        (9 * 86400, "9 days ago"),
        (-120, "in 2 min"),  # a clock ahead of this one
    ],
)
def test_ages(seconds: float, shown: str) -> None:
    then = NOW - timedelta(seconds=seconds)
    assert ago(then.isoformat(), now=NOW) == shown


def test_the_queens_iso_times_with_microseconds_and_without_a_zone() -> None:
    assert ago("2026-11-24T20:26:30.482924+00:00", now=NOW) == "3 min ago"
    assert ago("2026-11-24T20:26:30.482924", now=NOW) == "3 min ago"  # read as UTC


def test_missing_and_odd_values() -> None:
    assert ago(None, now=NOW) == "-"
    assert ago("", missing="never", now=NOW) == "never"
    assert ago("yesterday-ish", now=NOW) == "yesterday-ish"
