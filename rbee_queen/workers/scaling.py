"""Another worker for a model whose queue grows: scale-up.

A request that finds every worker of its model busy waits in the model's queue
(queue.py). The request that makes the queue `queue.scale_up_depth` deep
starts another worker itself (routing.py; with the default of 1, the first
request to find them full, as load on demand always did); one that has waited
`queue.scale_up_after_s` has one started here, in the background. Either way:
on an allowed node that runs none of the model yet, where it fits (the
starter's preflight; here a node that refuses is passed over for the next),
while the model has fewer than `workers.max_per_model` workers, starts in
progress included (0: no limit beyond one per node). The new worker takes the
queue's waiters first (`RequestQueue.offer`), and routing then sends requests
to the least loaded worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from rbee_queen.errors import RbeeError
from rbee_queen.workers.live import LiveWorker
from rbee_queen.workers.queue import RequestQueue
from rbee_queen.workers.registry import WorkerRegistry
from rbee_wire.queen_events import ScaleUp

log = logging.getLogger("rbee.queen.scaling")
# Starts a worker of the model on the node: (node, model_ref, slots, device).
Start = Callable[[str, str, int, str], Awaitable[LiveWorker]]
# The allowed nodes to start on, best first, leaving out those given (busy ones).
Candidates = Callable[[list[str], set[str]], list[str]]


@dataclass(frozen=True)
class ScaleSettings:
    max_per_model: int = 0  # 0: one worker per allowed node, no other limit
    depth: int = 1  # requests waiting that start another worker
    after_s: float = 2.0  # or one request waiting this long


@dataclass(frozen=True)
class Want:
    """What the model's waiting requests need: where a new worker may run."""

    model_ref: str
    nodes: list[str]
    slots: int
    device: str


class Scaler:
    def __init__(
        self,
        registry: WorkerRegistry,
        queue: RequestQueue,
        start: Start,
        candidates: Candidates,
        settings: ScaleSettings,
    ) -> None:
        self.registry = registry
        self.queue = queue
        self.start = start
        self.candidates = candidates
        self.settings = settings
        self._starting: dict[str, set[str]] = {}  # model -> nodes a worker starts on
        self._tasks: dict[str, asyncio.Task[None]] = {}  # model -> its scale-up
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._wants: dict[str, Want] = {}

    def workers_of(self, model_ref: str) -> int:
        """The model's workers towards the limit: ready ones not being shut
        down, and those starting on a node that has none of them yet."""
        live = [w for w in self.registry.live.values() if w.model_ref == model_ref]
        ready = [w for w in live if not w.draining]
        starting = self._starting.get(model_ref, set()) - {w.node for w in ready}
        return len(ready) + len(starting)

    def at_limit(self, model_ref: str) -> bool:
        limit = self.settings.max_per_model
        return bool(limit) and self.workers_of(model_ref) >= limit

    @contextlib.contextmanager
    def starting(self, model_ref: str, node: str) -> Iterator[None]:
        """Count a start in progress towards the model's limit while it runs."""
        nodes = self._starting.setdefault(model_ref, set())
        nodes.add(node)
        try:
            yield
        finally:
            nodes.discard(node)
            if not nodes:
                self._starting.pop(model_ref, None)

    def queued(self, want: Want) -> None:
        """A request is about to wait in the model's queue: once one has waited
        `after_s`, another worker starts (the router starts one itself when the
        queue is `depth` deep)."""
        self._wants[want.model_ref] = want
        self._arm(want.model_ref, self.settings.after_s)

    def announce(self, model_ref: str, node: str, depth: int, why: str) -> None:
        """Publish that another worker of the model starts on the node, and why
        (`depth`: the requests waiting for it, the one starting it included)."""
        self.queue.publish(
            ScaleUp(
                type="scale_up",
                model=model_ref,
                node=node,
                workers=self.workers_of(model_ref),
                depth=depth,
                reason=why,
            )
        )
        log.info("starting another worker of %s on %s: %s", model_ref, node, why)

    def _arm(self, model_ref: str, delay_s: float) -> None:
        if model_ref not in self._timers:
            loop = asyncio.get_running_loop()
            self._timers[model_ref] = loop.call_later(delay_s, self._waited, model_ref)

    def _waited(self, model_ref: str) -> None:
        """The timer: a request that has waited `after_s` starts another worker."""
        del self._timers[model_ref]
        waited = self.queue.oldest_wait(model_ref)
        want = self._wants.get(model_ref)
        if waited is None or want is None:
            self._wants.pop(model_ref, None)  # nothing waits: forget what it needed
            return
        if waited >= self.settings.after_s:
            self._scale(want, f"a request waited {waited:.1f} s (queue.scale_up_after_s)")
        self._arm(model_ref, max(self.settings.after_s - waited, 0.0) or self.settings.after_s)

    def _scale(self, want: Want, why: str) -> None:
        if want.model_ref in self._tasks or self.at_limit(want.model_ref):
            return
        busy = {w.node for w in self.registry.live.values() if w.model_ref == want.model_ref}
        busy |= self._starting.get(want.model_ref, set())
        try:
            nodes = self.candidates(want.nodes, busy)
        except RbeeError:  # the model's nodes were removed meanwhile
            return
        if not nodes:
            return
        task = asyncio.create_task(self._start_on_first(want, nodes, why))
        self._tasks[want.model_ref] = task
        task.add_done_callback(lambda _: self._tasks.pop(want.model_ref, None))

    async def _start_on_first(self, want: Want, nodes: list[str], why: str) -> None:
        """A worker on the first of `nodes` that takes one; the queue's waiters
        get its slots."""
        for node in nodes:
            if self.at_limit(want.model_ref):
                return
            self.announce(want.model_ref, node, self.queue.depth(want.model_ref), why)
            try:
                with self.starting(want.model_ref, node):
                    live = await self.start(node, want.model_ref, want.slots, want.device)
            except RbeeError as exc:
                log.warning("no worker of %s on %s: %s", want.model_ref, node, exc.message)
                continue
            except Exception:  # nothing awaits this task: say what went wrong
                log.exception("starting a worker of %s on %s failed", want.model_ref, node)
                return
            self.queue.offer(live)
            return

    async def aclose(self) -> None:
        """At the queen's stop: no more timers, and a start under way is ended
        (the starter then stops what it had spawned)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
