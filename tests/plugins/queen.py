"""A real queen process on a free loopback port, with the test's RBEE_HOME."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.plugins.sshd import free_port


@dataclass
class QueenProcess:
    url: str
    home: Path
    proc: subprocess.Popen[bytes]

    @property
    def log(self) -> str:
        path = self.home / "queen-test.log"
        return path.read_text() if path.exists() else ""

    @property
    def token(self) -> str:
        """The owner's token, which the queen wrote on first start (zero config)."""
        return (self.home / "api-token").read_text().strip()

    def client(self, token: str | None = None) -> httpx.Client:
        """A client that sends the owner's token (or `token`), as the keeper does."""
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return httpx.Client(base_url=self.url, timeout=60.0, headers=headers)

    def anonymous(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60.0)

    def add_node(self, body: dict[str, object]) -> dict[str, object]:
        """Add a node (a /v2/registry/beehives/add body, e.g. SshServer.node_body);
        fails the test unless the queen took it. Returns the node's record."""
        with self.client() as c:
            r = c.post("/v2/registry/beehives/add", json=body)
        assert r.status_code == 201, r.text
        node: dict[str, object] = r.json()["node"]
        return node


# What a queen started with RBEE_CHECK_MESSAGES=1 logs when an event it
# publishes or relays does not match its definition in rbee_wire.
CONTRACT_VIOLATION = "message contract violated"


def assert_messages_kept(log_path: Path) -> None:
    """Fail when the queen's log shows a message that broke its definition."""
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    broken = [line for line in text.splitlines() if CONTRACT_VIOLATION in line]
    assert not broken, "\n".join(broken[:5])


def start_queen(home: Path, *extra: str) -> QueenProcess:
    port = free_port()
    with open(home / "queen-test.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rbee_queen", "--port", str(port), *extra],
            env={**os.environ, "RBEE_HOME": str(home), "RBEE_CHECK_MESSAGES": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"queen exited: {(home / 'queen-test.log').read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=0.5).status_code == 200:
                return QueenProcess(url, home, proc)
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("queen did not answer /health in 20 s")


def stop_queen(queen: QueenProcess) -> None:
    if queen.proc.poll() is None:
        queen.proc.terminate()
        try:
            queen.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            queen.proc.kill()
            queen.proc.wait()
    assert_messages_kept(queen.home / "queen-test.log")


@pytest.fixture
def queen(rbee_home: Path) -> Iterator[QueenProcess]:
    q = start_queen(rbee_home)
    try:
        yield q
    finally:
        stop_queen(q)


# Supervision in fractions of a second, for tests of failure and recovery.
FAST_SUPERVISION = {
    "RBEE_SUPERVISOR_INTERVAL": "0.3",
    "RBEE_HUNG_AFTER": "1.5",
    "RBEE_RESTART_BASE_DELAY": "0.2",
    "RBEE_WORKER_HEALTH_TIMEOUT": "1",
    "RBEE_HEALTH_INTERVAL": "0",
}


@pytest.fixture
def fast_queen(rbee_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[QueenProcess]:
    """A queen that notices failed and hung workers within a second or two."""
    for name, value in FAST_SUPERVISION.items():
        monkeypatch.setenv(name, value)
    queen = start_queen(rbee_home)
    try:
        yield queen
    finally:
        stop_queen(queen)
