"""Docs that must not drift from the code."""

from __future__ import annotations

from pathlib import Path

import pytest

from rbee_keeper import reference

ROOT = Path(__file__).parent.parent


def test_cli_reference_matches_the_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    assert (ROOT / "docs" / "cli.md").read_text() == reference.render(), (
        "docs/cli.md is stale: run python -m rbee_keeper.reference > docs/cli.md"
    )


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test" in readme
    assert "scripts/test" in ci
