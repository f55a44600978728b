"""What the commands print: aligned tables for people, JSON for programs."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def print_json_line(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    for row in [headers, *rows]:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())


def cell(value: Any) -> str:
    """A table cell; a missing value shows as `-`."""
    return "-" if value is None or value == "" else str(value)


# (seconds, unit): the largest unit that fits names the age.
_UNITS = ((86400, "day"), (3600, "h"), (60, "min"), (1, "s"))


def ago(iso: Any, missing: str = "-", now: datetime | None = None) -> str:
    """An ISO time as a person reads it in a table (`3 min ago`); JSON output
    keeps the ISO text. Anything that is not an ISO time is shown as given."""
    if iso is None or iso == "":
        return missing
    try:
        then = datetime.fromisoformat(str(iso))
    except ValueError:
        return str(iso)
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)  # the queen writes UTC
    seconds = ((now or datetime.now(UTC)) - then).total_seconds()
    if abs(seconds) < 5:
        return "just now"
    size, unit = next((size, unit) for size, unit in _UNITS if abs(seconds) >= size)
    count = int(abs(seconds) // size)
    if unit == "day" and count != 1:
        unit = "days"
    return f"{count} {unit} ago" if seconds > 0 else f"in {count} {unit}"


def note(message: str) -> None:
    """One line for the person at the terminal, kept off stdout so pipes stay clean."""
    print(message, file=sys.stderr)
