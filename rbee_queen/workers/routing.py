"""Which worker serves a request: the least loaded ready worker for the model on
the allowed nodes; when none has a free slot, a new worker on an allowed node
that has none yet (load on demand); when every allowed node already runs one
and all are full, ALL_SLOTS_BUSY at once rather than a round trip to a worker
that would refuse. A draining worker (being shut down) takes no new request and
no second worker starts beside it; when it was the only choice: WORKER_DRAINING.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from rbee_queen import requestcontext as ctx
from rbee_queen.errors import AllSlotsBusy, NodeNotFound, RequestTimeout
from rbee_queen.store.tables import Node
from rbee_queen.workers.devices import serves
from rbee_queen.workers.live import LiveWorker, draining_error
from rbee_queen.workers.registry import WorkerRegistry
from rbee_queen.workers.starter import WorkerStarter


class Router:
    def __init__(self, registry: WorkerRegistry, starter: WorkerStarter) -> None:
        self.registry = registry
        self.starter = starter

    async def acquire(
        self, model_ref: str, nodes: list[str], slots: int, job_id: str, device: str = "cpu"
    ) -> LiveWorker:
        """A worker for the model on one of `nodes` that serves `device` (cpu,
        cuda or cuda:N), already claimed for this job."""
        await self.registry.adoption_done.wait()  # a previous queen's workers count too
        candidates = self._running(model_ref, nodes, device)
        running = [w for w in candidates if not w.draining]
        draining = [w for w in candidates if w.draining]
        free = [w for w in running if w.free_slots > 0]
        if free:
            chosen = min(free, key=lambda w: (w.in_flight / w.slots, nodes.index(w.node)))
            # No await between the choice and the claim: no other request can
            # take the same slot in between.
            self.registry.claim(chosen, job_id)
            return chosen
        # A node whose worker for the model is draining gets no second one meanwhile.
        node = self._node_to_start(nodes, {w.node for w in candidates})
        if node is None:
            if draining and not running:
                raise draining_error(draining[0])
            raise AllSlotsBusy(
                "every worker for this model is busy",
                slots_total=sum(w.slots for w in running),
                slots_busy=sum(w.in_flight for w in running),
            )
        live = await self.starter.ensure_worker(node, model_ref, slots, device)
        self.registry.claim(live, job_id)
        return live

    def _running(self, model_ref: str, nodes: list[str], device: str) -> list[LiveWorker]:
        return [
            w
            for w in self.registry.live.values()
            if w.model_ref == model_ref and w.node in nodes and serves(w.device, device)
        ]

    def _node_to_start(self, nodes: list[str], busy_nodes: set[str]) -> str | None:
        """An allowed node without a worker for the model: reachable ones first,
        then the one running the fewest workers, then the mapping's order."""
        known = {n.name: n for n in Node.select().where(Node.name.in_(nodes))}
        if not known:
            raise NodeNotFound(f"none of the model's nodes exists: {', '.join(nodes)}")
        load: dict[str, int] = {}
        for worker in self.registry.live.values():
            load[worker.node] = load.get(worker.node, 0) + 1
        options = [n for n in nodes if n in known and n not in busy_nodes]
        if not options:
            return None
        return min(
            options,
            key=lambda n: (known[n].status == "unreachable", load.get(n, 0), nodes.index(n)),
        )


@contextlib.asynccontextmanager
async def before_deadline() -> AsyncIterator[None]:
    """Run the block within the current request's deadline; REQUEST_TIMEOUT after it."""
    at = ctx.deadline.get()
    if at is None:
        yield
        return
    if at <= time.time():
        raise RequestTimeout("the request deadline passed before the work could start")
    try:
        async with asyncio.timeout_at(ctx.loop_time_at(at)):
            yield
    except TimeoutError:
        raise RequestTimeout("the request deadline passed before the first token") from None
