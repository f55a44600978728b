"""keeper.toml against a real queen: its token file is the one the keeper
sends, its output format is the default, and --text overrides it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.plugins.queen import QueenProcess


def keeper(config_home: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RBEE_")}
    env.update(XDG_CONFIG_HOME=str(config_home), HOME=str(config_home))
    return subprocess.run(
        [sys.executable, "-m", "rbee_keeper", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_keeper_toml_names_the_queen_the_token_file_and_the_output(
    queen: QueenProcess, tmp_path: Path
) -> None:
    token_file = tmp_path / "owner-token"
    token_file.write_text(queen.token + "\n")
    token_file.chmod(0o600)
    (tmp_path / "rbee").mkdir()
    settings = tmp_path / "rbee" / "keeper.toml"
    settings.write_text(f'queen_url = "{queen.url}"\noutput = "json"\n')
    refused = keeper(tmp_path, "workers", "list")  # no token anywhere: the queen says no
    assert refused.returncode == 1 and "MISSING_API_KEY" in refused.stderr
    settings.write_text(
        f'queen_url = "{queen.url}"\noutput = "json"\ntoken_file = "{token_file}"\n'
    )
    listed = keeper(tmp_path, "workers", "list")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == {"workers": []}
    as_text = keeper(tmp_path, "--text", "workers", "list")
    assert as_text.returncode == 0, as_text.stderr
    assert not as_text.stdout.lstrip().startswith("{")
