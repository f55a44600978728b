"""One transfer, any number of followers: a second request for the model a node
is already getting joins the running transfer instead of starting another.

The transfer runs in its own task; each follower sees every event from the
first (a late joiner gets the story so far, then the rest as it happens) and
the same ending, success or error. When the last follower goes away the
transfer is cancelled, as a lone client's disconnect always did; what was
written stays in the partial folder for the next run to resume.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

Event = dict[str, Any]


class SharedTransfer:
    def __init__(self, events: AsyncIterator[Event], on_end: Callable[[], object]) -> None:
        self._events: list[Event] = []
        self._error: BaseException | None = None
        self._finished = False
        self._changed = asyncio.Event()
        self._followers = 0
        self._on_end = on_end
        self._task = asyncio.create_task(self._run(events), name="model transfer")

    @property
    def followers(self) -> int:
        return self._followers

    async def _run(self, events: AsyncIterator[Event]) -> None:
        try:
            async for event in events:
                self._events.append(event)
                self._wake()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every follower ends with it
            self._error = exc
        finally:
            self._finished = True
            self._on_end()
            self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def follow(self) -> AsyncIterator[Event]:
        self._followers += 1
        seen = 0
        try:
            while True:
                changed = self._changed  # taken before the checks: no wake-up is missed
                while seen < len(self._events):
                    yield self._events[seen]
                    seen += 1
                if self._finished:
                    if self._error is not None:
                        raise self._error
                    return
                await changed.wait()
        finally:
            self._followers -= 1
            if self._followers == 0 and not self._finished:
                self._task.cancel()
