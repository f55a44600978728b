"""Connect to the queen, starting one in the background when a loopback URL has none.

A lock file serialises the start, so two keepers launched at once start one queen:
the second waits for the lock, then finds the first one's queen answering.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx

from rbee_keeper.client import QueenClient
from rbee_keeper.output import note
from rbee_queen.errors import QueenUnavailable

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
DEFAULT_START_TIMEOUT_S = 20.0
POLL_INTERVAL_S = 0.1


def connect(queen_url: str) -> QueenClient:
    """A client for a queen that answers `GET /health`."""
    client = QueenClient(queen_url)
    try:
        client.health()
    except QueenUnavailable:
        if not is_loopback(queen_url):
            client.close()
            raise
        try:
            start(queen_url, client.is_healthy)
        except BaseException:
            client.close()
            raise
    return client


def start(queen_url: str, is_up: Callable[[], bool]) -> subprocess.Popen[bytes] | None:
    """Start a queen for `queen_url` and wait until `is_up()`; None if one came up meanwhile."""
    log_path = rbee_home() / "logs" / "queen.log"
    # Private: the logs hold node names, addresses and request metadata.
    rbee_home().mkdir(parents=True, exist_ok=True, mode=0o700)
    log_path.parent.mkdir(exist_ok=True, mode=0o700)
    with start_lock(rbee_home() / "queen.lock"):
        if is_up():
            return None
        process = spawn(queen_url, log_path)
        wait_until_up(process, is_up, log_path, start_timeout_s())
    note(f"started local queen at {queen_url} (logs: {log_path})")
    return process


def spawn(queen_url: str, log_path: Path) -> subprocess.Popen[bytes]:
    url = httpx.URL(queen_url)
    command = [sys.executable, "-m", "rbee_queen", "--host", url.host, "--port", str(port_of(url))]
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "ab") as log:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        log.write(f"--- {stamp} rbee-keeper starting: {' '.join(command)}\n".encode())
        log.flush()
        # Its own session: the queen outlives this keeper and its terminal's Ctrl-C.
        return subprocess.Popen(  # noqa: S603 - our own interpreter and module
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            umask=0o077,  # the queen's database and files are the owner's alone
        )


def wait_until_up(
    process: subprocess.Popen[bytes], is_up: Callable[[], bool], log_path: Path, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while not is_up():
        status = process.poll()
        if status is not None:
            raise QueenUnavailable(
                f"local queen exited with status {status} before answering (logs: {log_path})",
                log=str(log_path),
            )
        if time.monotonic() > deadline:
            raise QueenUnavailable(
                f"local queen did not answer within {timeout_s:g} s (logs: {log_path})",
                log=str(log_path),
            )
        time.sleep(POLL_INTERVAL_S)


@contextmanager
def start_lock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def is_loopback(queen_url: str) -> bool:
    return httpx.URL(queen_url).host in LOOPBACK_HOSTS


def port_of(url: httpx.URL) -> int:
    if url.port is not None:
        return url.port
    return 443 if url.scheme == "https" else 80


def rbee_home() -> Path:
    return Path(os.environ.get("RBEE_HOME", "~/.rbee")).expanduser()


def start_timeout_s() -> float:
    """`RBEE_QUEEN_START_TIMEOUT` (seconds) overrides the default, mainly for tests."""
    value = os.environ.get("RBEE_QUEEN_START_TIMEOUT", "")
    try:
        return float(value) if value else DEFAULT_START_TIMEOUT_S
    except ValueError:
        return DEFAULT_START_TIMEOUT_S
