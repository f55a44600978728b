"""The queen's event bus: every change in the fleet, fanned out to subscribers.

Publishing never blocks and never waits for a subscriber: each subscriber has a
bounded queue, and one that falls behind (its queue is full) is dropped with a
final `dropped` event instead of slowing the queen. Synchronous listeners (the
metrics, the audit trail) see every event, in order.

An event is stamped (`seq`, `at`) as it is published and handed on a moment
later (rbee_queen/deferred.py): the requests whose claims and ends publish
most of them do not carry the listeners' work on their paths.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from rbee_queen import deferred
from rbee_wire import queen_events
from rbee_wire.queen_events import QueenEvent

log = logging.getLogger("rbee.queen.events")
Event = dict[str, Any]
Listener = Callable[[Event], None]


class Subscription:
    def __init__(self, bus: EventBus, size: int) -> None:
        self._bus = bus
        self._size = size
        # One place more than `size`, kept for the final `dropped` event.
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=size + 1)
        self.dropped = False

    def offer(self, event: Event) -> bool:
        """Queue an event; False (and the subscription ends) when it is full."""
        if self.dropped:
            return False
        if self._queue.qsize() >= self._size:
            self.dropped = True
            dropped = queen_events.Dropped(type="dropped", reason="consumer too slow; reconnect")
            self._queue.put_nowait(dict(dropped))
            return False
        self._queue.put_nowait(event)
        return True

    async def events(self) -> AsyncIterator[Event]:
        try:
            while True:
                event = await self._queue.get()
                yield event
                if event["type"] == "dropped":
                    return
        finally:
            self._bus.unsubscribe(self)


class EventBus:
    def __init__(self, queue_size: int = 1000, check_messages: bool = False) -> None:
        self.queue_size = queue_size
        self.check_messages = check_messages  # see QueenConfig.check_messages
        self._subscriptions: set[Subscription] = set()
        self._listeners: list[Listener] = []
        self._seq = itertools.count(1)

    def publish(self, message: QueenEvent) -> Event:
        """Stamp the event (`seq`, `at`) now; hand it to every listener and
        subscriber a moment later, after the events published before it."""
        event: Event = {**message, "seq": next(self._seq), "at": time.time()}
        deferred.later(lambda: self._deliver(event))
        return event

    def publish_built(self, build: Callable[[], QueenEvent]) -> None:
        """Publish the event `build` makes, its place (`seq`, `at`) taken now
        and `build` called when it is handed on: for an event whose making (a
        stream's figures, read from its last bytes) would delay a response."""
        seq, at = next(self._seq), time.time()
        deferred.later(lambda: self._deliver({**build(), "seq": seq, "at": at}))

    def _deliver(self, event: Event) -> None:
        if self.check_messages:
            for problem in queen_events.problems(event):
                log.error("message contract violated: %s in %s", problem, event)
        for listener in self._listeners:
            listener(event)
        for sub in list(self._subscriptions):
            if not sub.offer(event):
                self._subscriptions.discard(sub)

    def subscribe(self) -> Subscription:
        """A new subscriber gets the events published from now on: the ones
        published before are handed to the others first."""
        deferred.flush()
        sub = Subscription(self, self.queue_size)
        self._subscriptions.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscriptions.discard(sub)

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)
