"""Scale-up's rules in process, with the real queue and registry: a request that
has waited `after_s` starts another worker whatever the depth; a node that
refuses the start is passed over for the next; starts in progress count
towards `max_per_model`, which holds while more requests wait. The start
itself is a stand-in that registers a worker (the real path, through sshd and
a model load: test_scale_up.py).
"""

from __future__ import annotations

import asyncio

from rbee_queen.errors import InsufficientRam
from rbee_queen.workers.live import LiveWorker
from rbee_queen.workers.queue import QueueLimits, RequestQueue
from rbee_queen.workers.registry import WorkerRegistry
from rbee_queen.workers.scaling import Scaler, ScaleSettings, Want
from rbee_queen.workers.states import StateRecorder
from rbee_wire.queen_events import QueenEvent

MODEL = "file:/m"
WANT = Want(MODEL, ["a", "b", "c"], 1, "cpu")


class Fleet:
    """A queue and registry with worker a busy, and a scaler whose starts are
    recorded (a node in `refuse` fails its start as a full node does)."""

    def __init__(self, settings: ScaleSettings, refuse: frozenset[str] = frozenset()) -> None:
        self.events: list[QueenEvent] = []
        self.registry = WorkerRegistry(StateRecorder(lambda *a: None), self.events.append)
        self.queue = RequestQueue(self.registry, self.events.append, QueueLimits(max_length=8))
        self.refuse = refuse
        self.started: list[str] = []
        self.gate = asyncio.Event()  # holds each start until set
        self.asked = asyncio.Event()  # set by the first start
        busy = LiveWorker("w-a", "a", MODEL, 1, 1, slots=1)
        self.registry.add(busy)
        self.registry.claim(busy, "holder")
        self.scaler = Scaler(self.registry, self.queue, self.start, self.candidates, settings)

    def candidates(self, nodes: list[str], busy: set[str]) -> list[str]:
        return [n for n in nodes if n not in busy]

    async def start(self, node: str, model_ref: str, slots: int, device: str) -> LiveWorker:
        self.started.append(node)
        self.asked.set()
        await self.gate.wait()
        if node in self.refuse:
            raise InsufficientRam(f"{node} is full")
        live = LiveWorker(f"w-{node}", node, model_ref, 1, 1, slots=slots)
        self.registry.add(live)
        return live

    async def queue_one(self, job: str) -> asyncio.Task[LiveWorker]:
        self.scaler.queued(WANT)
        task = asyncio.create_task(self.queue.wait(MODEL, WANT.nodes, "cpu", "k", job, None))
        await asyncio.sleep(0)  # in the queue now
        return task


async def test_a_request_waiting_long_enough_starts_a_worker_whatever_the_depth() -> None:
    fleet = Fleet(ScaleSettings(max_per_model=0, depth=100, after_s=0.05))
    fleet.gate.set()
    waiting = await fleet.queue_one("j1")
    assert fleet.started == []  # one waits, the depth wants 100
    served = await asyncio.wait_for(waiting, 5)
    assert fleet.started == ["b"] and served.node == "b"
    (event,) = [e for e in fleet.events if e["type"] == "scale_up"]
    assert event["node"] == "b" and "waited" in event["reason"]


async def test_a_node_that_refuses_is_passed_over_and_starts_count_towards_the_limit() -> None:
    fleet = Fleet(ScaleSettings(max_per_model=2, depth=100, after_s=0.02), frozenset({"b"}))
    first = await fleet.queue_one("j1")
    await asyncio.wait_for(fleet.asked.wait(), 5)  # the timer fired: b starts, held
    await fleet.queue_one("j2")
    assert fleet.scaler.workers_of(MODEL) == 2 and fleet.scaler.at_limit(MODEL)
    fleet.gate.set()
    served = await asyncio.wait_for(first, 5)
    assert fleet.started == ["b", "c"] and served.node == "c"  # b refused: c took it
    await fleet.queue_one("j3")
    await asyncio.sleep(0.1)  # timers fire for j2 and j3; a and c run: the limit holds
    assert fleet.started == ["b", "c"]
    await fleet.scaler.aclose()
    for task in asyncio.all_tasks() - {asyncio.current_task()}:
        task.cancel()  # the requests still waiting
