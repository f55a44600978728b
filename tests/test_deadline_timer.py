"""A request's deadline is enforced no earlier than it passes, on uvloop too.

uvloop's clock is read once per loop turn in whole milliseconds, so a timer
armed late in a turn fires early by as much; a queen that gave up early would
answer REQUEST_TIMEOUT while the worker, shown a deadline not yet passed,
started the job anyway."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from rbee_queen import requestcontext as ctx
from rbee_queen.errors import RequestTimeout
from rbee_queen.workers.routing import before_deadline


async def give_up_times(rounds: int) -> list[float]:
    """Seconds from each deadline to the moment before_deadline gave up on it."""
    late = []
    phase = random.Random(0)
    for _ in range(rounds):
        # Deadlines at every fraction of a millisecond, some armed after a busy
        # spell (the loop's clock behind).
        at = time.time() + 0.005 + phase.random() / 1000
        token = ctx.deadline.set(at)
        try:
            busy_until = time.monotonic() + phase.choice((0, 0.002))
            while time.monotonic() < busy_until:
                pass
            with pytest.raises(RequestTimeout):
                async with before_deadline():
                    await asyncio.sleep(5)
            late.append(time.time() - at)
        finally:
            ctx.deadline.reset(token)
    return late


Runner = Callable[[Coroutine[Any, Any, list[float]]], list[float]]


@pytest.mark.parametrize("run", [uvloop.run, asyncio.run], ids=["uvloop", "asyncio"])
def test_a_deadline_is_not_enforced_before_it_passes(run: Runner) -> None:
    late = run(give_up_times(200))
    assert min(late) >= 0, f"gave up {-min(late) * 1000:.2f} ms before the deadline"
    assert max(late) < 0.25, max(late)  # and still at about the deadline


def test_a_deadline_already_passed_is_refused_at_once() -> None:
    async def main() -> None:
        token = ctx.deadline.set(time.time() - 0.001)
        try:
            with pytest.raises(RequestTimeout, match="before the work could start"):
                async with before_deadline():
                    raise AssertionError("the work must not start")
        finally:
            ctx.deadline.reset(token)

    asyncio.run(main())
