"""Helpers the queue, failover and shutdown tests share: a worker's slot held
busy by freezing it mid-stream, the queen's metrics, waiting for a condition."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tests.plugins.queen import QueenProcess

# Greedy: the tiny model runs on to max_tokens for this prompt (no early EOS), long
# enough that the freeze lands mid-generation.
LONG = {"prompt": "Once upon a time", "max_tokens": 512, "temperature": 0}


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def metric(queen: QueenProcess, pattern: str) -> float:
    """A sample of the queen's /metrics (a regex for its name and labels); 0 if absent."""
    with queen.client() as c:
        text = c.get("/metrics").text
    found = re.search(rf"^{pattern} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


@contextmanager
def frozen_slot_of(queen: QueenProcess, pid: int, model: str) -> Iterator[list[str]]:
    """A slot of worker `pid` (the least loaded for `model`) taken by a stream
    whose worker is frozen; the stream's lines, read to its end, in the list
    once the block ends."""
    lines: list[str] = []
    with queen.client() as c, c.stream("POST", "/v2/tasks", json={**LONG, "model": model}) as held:
        os.kill(pid, signal.SIGSTOP)
        try:
            yield lines
        finally:
            os.kill(pid, signal.SIGCONT)
        lines.extend(held.iter_lines())


def in_thread(target: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """Run `target` on a thread; its result lands in the list."""
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(target()), daemon=True)
    thread.start()
    return thread, out
