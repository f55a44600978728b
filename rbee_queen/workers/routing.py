"""Which worker serves a request: the least loaded ready worker for the model on
the allowed nodes; when the model has none there, a new worker on an allowed
node (load on demand); when its workers are all full, the request waits in
the model's queue (workers/queue.py) for the next slot that frees, and a
growing queue starts another worker on an allowed node that has none yet
(workers/scaling.py, under `workers.max_per_model`). With the queue turned
off (length 0) such a worker starts at once, and when none can, the answer
is ALL_SLOTS_BUSY rather than a round trip to a worker that would refuse. A
draining worker (being shut down) takes no new request and no second worker
starts beside it; when it was the only choice: WORKER_DRAINING.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from rbee_queen import requestcontext as ctx
from rbee_queen.config import QueenConfig
from rbee_queen.errors import AllSlotsBusy, InferenceFailed, NodeNotFound, RequestTimeout
from rbee_queen.nodes.lease import NodeLeases
from rbee_queen.store.tables import Node
from rbee_queen.workers.devices import serves
from rbee_queen.workers.live import LiveWorker, draining_error
from rbee_queen.workers.queue import Gone, QueueLimits, RequestQueue
from rbee_queen.workers.registry import Publish, WorkerRegistry
from rbee_queen.workers.scaling import Scaler, ScaleSettings, Want
from rbee_queen.workers.starter import WorkerStarter


class Router:
    def __init__(
        self,
        registry: WorkerRegistry,
        starter: WorkerStarter,
        queue: RequestQueue,
        leases: NodeLeases | None = None,
    ) -> None:
        self.registry = registry
        self.starter = starter
        self.queue = queue
        # Two queens on one database: a worker starts only on a node whose lease
        # this queen holds (taken on demand when free; NODE_HELD_ELSEWHERE if not).
        self.leases = leases
        # Another worker for a model whose queue grows (scaling.py).
        self.scaling = Scaler(registry, queue, self._start, self._nodes_to_start, ScaleSettings())

    @classmethod
    def build(
        cls,
        registry: WorkerRegistry,
        starter: WorkerStarter,
        publish: Publish,
        config: QueenConfig,
        leases: NodeLeases | None = None,
    ) -> Router:
        queue = RequestQueue(registry, publish, queue_limits(config))
        router = cls(registry, starter, queue, leases)
        router.scaling.settings = scale_settings(config)
        return router

    def reconfigure(self, config: QueenConfig) -> None:
        """A reload's queue bounds and scale-up settings; requests already
        waiting keep their places."""
        self.queue.limits = queue_limits(config)
        self.scaling.settings = scale_settings(config)

    async def acquire(
        self,
        model_ref: str,
        nodes: list[str],
        slots: int,
        job_id: str,
        device: str = "cpu",
        *,
        key: str = "",
        gone: Gone | None = None,
        exclude: set[str] | frozenset[str] = frozenset(),
    ) -> LiveWorker:
        """A worker for the model on one of `nodes` that serves `device` (cpu,
        cuda or cuda:N), already claimed for this job. `key` names the API key
        (the queue's turns); `gone` returns once the client has left; `exclude`
        names workers lost to this request (failover.py), whose nodes get no
        second worker from it."""
        await self.registry.adoption_done.wait()  # a previous queen's workers count too
        candidates = self._running(model_ref, nodes, device)
        running = [w for w in candidates if not w.draining and w.worker_id not in exclude]
        draining = [w for w in candidates if w.draining]
        if self.queue.depth(model_ref):
            for worker in running:  # e.g. a restarted worker: the queue's first
                self.queue.offer(worker)
        free = [w for w in running if w.free_slots > 0]
        if free:
            chosen = min(free, key=lambda w: (w.in_flight / w.slots, nodes.index(w.node)))
            # No await between the choice and the claim: no other request can
            # take the same slot in between.
            self.registry.claim(chosen, job_id)
            return chosen
        # A node whose worker for the model is draining gets no second one meanwhile.
        node = self._node_to_start(nodes, {w.node for w in candidates})
        if node is not None and self.scaling.at_limit(model_ref):
            node = None
        if node is not None and running:
            # Every worker is full: another starts once the queue is deep enough,
            # or a request has waited long enough (scaling.py); until then, wait.
            depth = self.queue.depth(model_ref) + 1
            why = "every worker busy and the queue off"
            if self.queue.limits.max_length:
                why = "queue.scale_up_depth reached"
                self.scaling.queued(Want(model_ref, nodes, slots, device))
                node = node if depth >= self.scaling.settings.depth else None
            if node is not None:
                self.scaling.announce(model_ref, node, depth, why)
        if node is None:
            if draining and not running:
                raise draining_error(draining[0])
            if exclude and not running:
                raise InferenceFailed("the request's worker was lost and no other can take it")
            return await self._wait(running, model_ref, nodes, device, key, job_id, gone, exclude)
        with self.scaling.starting(model_ref, node):
            live = await self._start(node, model_ref, slots, device)
        self.queue.offer(live)  # requests that queued while it started come first
        if live.free_slots > 0:
            self.registry.claim(live, job_id)
            return live
        # Others asked for the same start meanwhile and took its slots.
        return await self._wait([live], model_ref, nodes, device, key, job_id, gone)

    async def _wait(
        self,
        running: list[LiveWorker],
        model_ref: str,
        nodes: list[str],
        device: str,
        key: str,
        job_id: str,
        gone: Gone | None,
        exclude: set[str] | frozenset[str] = frozenset(),
    ) -> LiveWorker:
        """The next slot through the model's queue; ALL_SLOTS_BUSY when it is off."""
        if self.queue.limits.max_length == 0:
            raise AllSlotsBusy(
                "every worker for this model is busy",
                slots_total=sum(w.slots for w in running),
                slots_busy=sum(w.in_flight for w in running),
            )
        return await self.queue.wait(model_ref, nodes, device, key, job_id, gone, exclude)

    async def _start(self, node: str, model_ref: str, slots: int, device: str) -> LiveWorker:
        if self.leases is not None:
            await self.leases.ensure(node)  # a takeover re-adopts the node's workers first
        return await self.starter.ensure_worker(node, model_ref, slots, device)

    def _running(self, model_ref: str, nodes: list[str], device: str) -> list[LiveWorker]:
        # A node whose lease lapsed here (a stalled queen) is the other queen's
        # already, though its workers are let go only at the next renewal.
        drives = self.leases.drives if self.leases is not None else (lambda node: True)
        return [
            w
            for w in self.registry.live.values()
            if w.model_ref == model_ref
            and w.node in nodes
            and serves(w.device, device)
            and drives(w.node)
        ]

    def _node_to_start(self, nodes: list[str], busy_nodes: set[str]) -> str | None:
        options = self._nodes_to_start(nodes, busy_nodes)
        return options[0] if options else None

    def _nodes_to_start(self, nodes: list[str], busy_nodes: set[str]) -> list[str]:
        """The allowed nodes without a worker for the model, best first: reachable
        ones, then those running the fewest workers, then the mapping's order."""
        known = {n.name: n for n in Node.select().where(Node.name.in_(nodes))}
        if not known:
            raise NodeNotFound(f"none of the model's nodes exists: {', '.join(nodes)}")
        load: dict[str, int] = {}
        for worker in self.registry.live.values():
            load[worker.node] = load.get(worker.node, 0) + 1
        options = [n for n in nodes if n in known and n not in busy_nodes]
        if not options:
            return []
        # A node another queen drives comes last: starting there is refused.
        elsewhere = self.leases.held_elsewhere(options) if self.leases is not None else set()
        return sorted(
            options,
            key=lambda n: (
                known[n].status == "unreachable",
                n in elsewhere,
                load.get(n, 0),
                nodes.index(n),
            ),
        )


def queue_limits(config: QueenConfig) -> QueueLimits:
    return QueueLimits(max_length=config.queue_max_length, max_wait_s=config.queue_max_wait_s)


def scale_settings(config: QueenConfig) -> ScaleSettings:
    return ScaleSettings(
        max_per_model=config.workers_max_per_model,
        depth=config.queue_scale_up_depth,
        after_s=config.queue_scale_up_after_s,
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
