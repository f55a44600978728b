"""Every test gets its own RBEE_HOME so nothing touches a user's real state."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def rbee_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "rbee-home"
    home.mkdir()
    monkeypatch.setenv("RBEE_HOME", str(home))
    monkeypatch.delenv("RBEE_QUEEN_URL", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home
