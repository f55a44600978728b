"""scripts/demo end to end: its own RBEE_HOME and queen port, the demo's own model.

The first run trains the demo model with the demo's settings (the one full training
in the tests, some seconds), so the answer checked is the one a newcomer sees.
CI has run scripts/bootstrap already, so the package step is the "reused" path.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rbee_worker.demotext import PASSAGES
from tests.plugins.sshd import free_port

ROOT = Path(__file__).resolve().parents[1]


def demo(home: Path, port: int, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "scripts/demo", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **os.environ,
            "RBEE_HOME": str(home),
            "RBEE_QUEEN_URL": f"http://127.0.0.1:{port}",
            **env,
        },
    )


def stop_detached(home: Path) -> None:
    """The demo leaves its queen (which stops its workers) and its sshd running."""
    for record in (home / "queen.pid", home / "demo-sshd" / "server.json"):
        if record.exists():
            pid = json.loads(record.read_text())["pid"]
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str], list[str]]]:
    home = tmp_path_factory.mktemp("demo-home")
    port = free_port()
    try:
        first = demo(home, port)
        assert first.returncode == 0, first.stdout + first.stderr
        second = demo(home, port)
        assert second.returncode == 0, second.stdout + second.stderr
        yield home, first.stdout.splitlines(), second.stdout.splitlines()
    finally:
        stop_detached(home)


def test_the_first_run_prints_one_line_a_step_and_an_answer(
    runs: tuple[Path, list[str], list[str]],
) -> None:
    home, first, _ = runs
    log = home / "logs" / "demo.log"
    assert first[0] == f"rbee demo (log: {log})"
    steps = [line.split(":")[0] for line in first if line.startswith("✓ ")]
    assert steps == [
        "✓ packages",
        "✓ model",
        "✓ node sshd",
        "✓ queen",
        "✓ node local",
        "✓ worker",
    ]
    assert first[2].startswith(f"✓ model: trained {home / 'models' / 'demo'}: ")
    prompt = first.index("» rbee runs")
    # Not a blend of words: the README's first paragraph, word for word, then EOS.
    assert "rbee runs" + first[prompt + 1] == PASSAGES[0]
    assert first[-1] == f"Done. The whole log: {log}"
    assert len(first) == prompt + 4
    # The commands' own output went to the log (the second run's, which rewrote it).
    assert "stop_reason" in log.read_text() and not any("stop_reason" in line for line in first)


def test_a_second_run_says_what_it_reused(runs: tuple[Path, list[str], list[str]]) -> None:
    _, first, second = runs
    reused = [line for line in second if line.startswith("✓ ")]
    assert all("reused" in line for line in reused), reused
    assert second[second.index("» rbee runs") + 1] == first[first.index("» rbee runs") + 1]


def test_a_failed_step_shows_the_log(tmp_path: Path) -> None:
    # Not a number: the training command refuses it before it imports torch.
    failed = demo(tmp_path, free_port(), RBEE_DEMO_STEPS="many")
    assert failed.returncode == 1
    assert "  failed: demo model" in failed.stderr
    assert f"--- {tmp_path / 'logs' / 'demo.log'} ---" in failed.stderr
    assert "error: argument --steps: invalid int value: 'many'" in failed.stderr
    assert "✓ model" not in failed.stdout
