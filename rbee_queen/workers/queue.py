"""Requests that wait for a slot: one queue per model, bounded in length and in
wait, first in first out within an API key and round robin between keys, so
one key's burst cannot starve another key's requests.

A freed slot is handed over synchronously (`offer`, called by the registry as
it releases the slot): the next waiter the worker can serve gets the slot
already claimed, so a request arriving meanwhile cannot overtake the queue.
A waiter whose client leaves, whose task is cancelled (its deadline) or whose
wait runs out leaves the queue at once; a slot handed to it in that same
moment goes back to the queue.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from rbee_queen.errors import ClientGone, QueueFull, QueueTimeout
from rbee_queen.workers.devices import serves
from rbee_queen.workers.live import LiveWorker
from rbee_queen.workers.registry import Publish, WorkerRegistry
from rbee_wire.queen_events import RequestDequeued, RequestFinished, RequestQueued

# Returns once the client has gone (the ASGI `receive` after the body was read).
Gone = Callable[[], Awaitable[object]]


@dataclass
class QueueLimits:
    max_length: int = 512  # per model; 0: nothing waits
    max_wait_s: float = 60.0


@dataclass(eq=False)
class Waiter:
    job_id: str
    nodes: list[str]
    device: str
    exclude: set[str] | frozenset[str] = frozenset()  # workers lost to this request
    since: float = field(default_factory=time.monotonic)  # when it began to wait
    claimed: asyncio.Future[LiveWorker] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def fits(self, live: LiveWorker) -> bool:
        return (
            live.node in self.nodes
            and serves(live.device, self.device)
            and live.worker_id not in self.exclude
        )


class ModelQueue:
    """One model's waiters: a FIFO per key, the keys served in turn."""

    def __init__(self) -> None:
        self.by_key: dict[str, deque[Waiter]] = {}  # insertion order: the keys' turn

    def __len__(self) -> int:
        return sum(len(q) for q in self.by_key.values())

    def oldest(self) -> float | None:
        """When its longest-waiting request began to wait (None: none waits)."""
        return min((q[0].since for q in self.by_key.values() if q), default=None)

    def add(self, key: str, waiter: Waiter) -> None:
        self.by_key.setdefault(key, deque()).append(waiter)

    def discard(self, key: str, waiter: Waiter) -> None:
        waiters = self.by_key.get(key)
        if waiters is not None and waiter in waiters:
            waiters.remove(waiter)
            if not waiters:
                del self.by_key[key]

    def take_for(self, live: LiveWorker) -> Waiter | None:
        """The oldest waiter of the first key in turn that `live` can serve; that
        key's turn then moves to the back."""
        for key, waiters in self.by_key.items():
            waiter = next((w for w in waiters if w.fits(live)), None)
            if waiter is None:
                continue
            waiters.remove(waiter)
            del self.by_key[key]
            if waiters:
                self.by_key[key] = waiters  # re-inserted: last in the keys' turn
            return waiter
        return None


class RequestQueue:
    def __init__(self, registry: WorkerRegistry, publish: Publish, limits: QueueLimits) -> None:
        self.registry = registry
        self.publish = publish
        self.limits = limits
        self.models: dict[str, ModelQueue] = {}
        registry.on_slot_free = self.offer

    def depth(self, model_ref: str) -> int:
        queue = self.models.get(model_ref)
        return len(queue) if queue is not None else 0

    def oldest_wait(self, model_ref: str) -> float | None:
        """Seconds the model's longest-waiting request has waited; None when none waits."""
        queue = self.models.get(model_ref)
        since = queue.oldest() if queue is not None else None
        return None if since is None else time.monotonic() - since

    async def wait(
        self,
        model_ref: str,
        nodes: list[str],
        device: str,
        key: str,
        job_id: str,
        gone: Gone | None,
        exclude: set[str] | frozenset[str] = frozenset(),
    ) -> LiveWorker:
        """Wait for a slot of the model on `nodes`; returns the worker, claimed.
        QUEUE_FULL at once when the queue is at its limit."""
        queue = self.models.setdefault(model_ref, ModelQueue())
        if len(queue) >= self.limits.max_length:
            self._left(job_id, model_ref, "full", 0.0)
            raise QueueFull(
                f"every slot for this model is busy and {len(queue)} request(s) already wait",
                depth=len(queue),
                max_length=self.limits.max_length,
            )
        waiter = Waiter(job_id, nodes, device, exclude)
        queue.add(key, waiter)
        self.publish(
            RequestQueued(type="request_queued", job_id=job_id, model=model_ref, depth=len(queue))
        )
        started = time.monotonic()
        outcome = "cancelled"
        try:
            live = await self._served(waiter, gone)
            outcome = "served"
            return live
        except QueueTimeout:
            outcome = "timeout"
            raise
        except ClientGone:
            outcome = "gone"
            raise
        finally:
            queue.discard(key, waiter)
            if outcome != "served":
                self._give_back(waiter)
            # Only the model's current queue: this one may have been dropped
            # (emptied) and a newer one, with newer waiters, made since.
            if not queue and self.models.get(model_ref) is queue:
                del self.models[model_ref]
            self._left(job_id, model_ref, outcome, time.monotonic() - started)

    async def _served(self, waiter: Waiter, gone: Gone | None) -> LiveWorker:
        watch = asyncio.ensure_future(gone()) if gone is not None else None
        try:
            waiting: set[asyncio.Future[object]] = {waiter.claimed}  # type: ignore[arg-type]
            if watch is not None:
                waiting.add(watch)
            done, _ = await asyncio.wait(
                waiting, timeout=self.limits.max_wait_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if watch is not None:
                watch.cancel()
        if waiter.claimed in done:
            return waiter.claimed.result()
        if watch is not None and watch in done:
            raise ClientGone("the client left while its request waited for a slot")
        raise QueueTimeout(
            f"no slot freed within {self.limits.max_wait_s:g} s", max_wait_s=self.limits.max_wait_s
        )

    def _give_back(self, waiter: Waiter) -> None:
        """A slot handed over as the waiter left: release it (to the next waiter),
        and end on the books the request its claim started."""
        if not waiter.claimed.done() or waiter.claimed.cancelled():
            waiter.claimed.cancel()
            return
        live = waiter.claimed.result()
        self.registry.release(live)
        self.publish(
            RequestFinished(
                type="request_finished",
                job_id=waiter.job_id,
                worker_id=live.worker_id,
                node=live.node,
                outcome="CANCELLED",
                tokens_out=0,
                ttft_ms=None,
                decode_time_ms=0,
                tokens_per_s=None,
            )
        )

    def offer(self, live: LiveWorker) -> None:
        """Hand the worker's free slots to the waiters it can serve, each claimed."""
        queue = self.models.get(live.model_ref)
        while queue and live.free_slots > 0 and not live.draining:
            waiter = queue.take_for(live)
            if waiter is None:
                return
            self.registry.claim(live, waiter.job_id)
            waiter.claimed.set_result(live)

    def _left(self, job_id: str, model_ref: str, outcome: str, waited_s: float) -> None:
        self.publish(
            RequestDequeued(
                type="request_dequeued",
                job_id=job_id,
                model=model_ref,
                outcome=outcome,
                waited_s=round(waited_s, 4),
                depth=self.depth(model_ref),
            )
        )
