"""Starting a local queen when none answers on a loopback URL.

The keeper runs `python -m rbee_queen`. So that these tests decide what that
queen does (fail, hang, serve) whatever state the real queen is in, each puts a
stand-in `rbee_queen` package first on PYTHONPATH: its `__main__` is the test's,
and its `__path__` goes on to the real package, so `rbee_queen.errors` still
imports in the keeper.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import rbee_queen
from rbee_keeper.local_queen import is_loopback

REAL_QUEEN_PACKAGE = Path(rbee_queen.__file__).parent

RECORD_START = """
import json, os, sys
record = {
    "argv": sys.argv[1:],
    "pid": os.getpid(),
    "own_session": os.getsid(0) == os.getpid(),
    "stdin": sys.stdin.read(),
    "rbee_home": os.environ.get("RBEE_HOME"),
}
with open(os.path.join(os.environ["RBEE_HOME"], "queen-starts.jsonl"), "a") as starts:
    starts.write(json.dumps(record) + "\\n")
"""

QUEEN_THAT_EXITS = (
    RECORD_START
    + """
print("stand-in queen: refusing to start", flush=True)
sys.exit(3)
"""
)

QUEEN_THAT_HANGS = (
    RECORD_START
    + """
import time
time.sleep(60)
"""
)

QUEEN_THAT_SERVES = (
    RECORD_START
    + """
import time
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

async def health(request):
    return JSONResponse({"status": "ok", "version": "0.1.0"})

async def workers(request):
    return JSONResponse({"workers": []})

time.sleep(0.5)  # slow to come up, so a second keeper arrives while it starts
options = dict(zip(sys.argv[1::2], sys.argv[2::2]))
app = Starlette(routes=[Route("/health", health), Route("/v2/workers/list", workers)])
uvicorn.run(app, host=options["--host"], port=int(options["--port"]), log_level="warning")
"""
)


def home() -> Path:
    return Path(os.environ["RBEE_HOME"])


def free_loopback_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def queen_starts() -> list[dict[str, object]]:
    path = home() / "queen-starts.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


@dataclass
class Keeper:
    """Runs rbee-keeper where `python -m rbee_queen` finds the stand-in package."""

    env: dict[str, str]
    cwd: Path  # not the repository: `-m` looks in the working directory first
    queen_main: Path

    def run(self, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "rbee_keeper", *argv]
        return subprocess.run(
            command, env={**self.env, **env}, cwd=self.cwd, capture_output=True, text=True
        )

    def start(self, *argv: str) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "rbee_keeper", *argv]
        return subprocess.Popen(
            command,
            env=self.env,
            cwd=self.cwd,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )


@pytest.fixture
def keeper(tmp_path: Path) -> Iterator[Keeper]:
    package = tmp_path / "standin" / "rbee_queen"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(f"__path__.append({str(REAL_QUEEN_PACKAGE)!r})\n")
    env = {**os.environ, "PYTHONPATH": str(package.parent)}
    yield Keeper(env=env, cwd=tmp_path, queen_main=package / "__main__.py")
    for start in queen_starts():
        stop(int(str(start["pid"])))
    real_queen = home() / "queen.pid"  # the real queen's pid file, had it been started
    if real_queen.exists():
        stop(json.loads(real_queen.read_text())["pid"])
        pytest.fail("the real queen was started instead of the stand-in")


def stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and is_running(pid):
        time.sleep(0.05)


def is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_start_failure_names_the_log_file(keeper: Keeper) -> None:
    keeper.queen_main.write_text(QUEEN_THAT_EXITS)
    url = free_loopback_url()

    run = keeper.run("workers", "list", "--queen-url", url)

    log = home() / "logs" / "queen.log"
    assert run.returncode == 1
    assert run.stderr.splitlines() == [
        f"error: [QUEEN_UNAVAILABLE] local queen exited with status 3 before answering "
        f"(logs: {log})"
    ]
    [start] = queen_starts()
    port = url.rsplit(":", 1)[1]
    assert start["argv"] == ["--host", "127.0.0.1", "--port", port]
    assert start["own_session"] is True
    assert start["stdin"] == ""
    assert start["rbee_home"] == str(home())
    assert "stand-in queen: refusing to start" in log.read_text()


def test_start_timeout_names_the_log_file(keeper: Keeper) -> None:
    keeper.queen_main.write_text(QUEEN_THAT_HANGS)

    started = time.monotonic()
    url = free_loopback_url()
    run = keeper.run("setup", "list-nodes", "--queen-url", url, RBEE_QUEEN_START_TIMEOUT="0.5")

    log = home() / "logs" / "queen.log"
    assert run.returncode == 1
    assert run.stderr.splitlines() == [
        f"error: [QUEEN_UNAVAILABLE] local queen did not answer within 0.5 s (logs: {log})"
    ]
    assert log.is_file()
    assert time.monotonic() - started < 10
    assert len(queen_starts()) == 1


def test_two_keepers_at_once_start_one_queen(keeper: Keeper) -> None:
    keeper.queen_main.write_text(QUEEN_THAT_SERVES)
    url = free_loopback_url()

    keepers = [keeper.start("workers", "list", "--json", "--queen-url", url) for _ in range(2)]
    results = [(process.communicate(timeout=60), process.returncode) for process in keepers]

    assert [code for _, code in results] == [0, 0], results
    assert [json.loads(out) for (out, _), _ in results] == [{"workers": []}] * 2
    notes = sorted(err.strip() for (_, err), _ in results)
    log = home() / "logs" / "queen.log"
    assert notes == ["", f"started local queen at {url} (logs: {log})"]
    assert len(queen_starts()) == 1


def test_no_start_for_a_queen_that_is_not_on_this_machine(keeper: Keeper) -> None:
    keeper.queen_main.write_text(QUEEN_THAT_EXITS)
    url = "http://nonexistent.invalid:8080"

    run = keeper.run("workers", "list", "--queen-url", url)

    assert run.returncode == 1
    [line] = run.stderr.splitlines()
    assert line.startswith(f"error: [QUEEN_UNAVAILABLE] cannot reach the queen at {url}: ")
    assert queen_starts() == []
    assert not (home() / "logs").exists()


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8080", True),
        ("http://localhost:8080", True),
        ("http://[::1]:8080", True),
        ("http://10.0.0.5:8080", False),
        ("https://queen.example.com", False),
    ],
)
def test_is_loopback(url: str, loopback: bool) -> None:
    assert is_loopback(url) is loopback
