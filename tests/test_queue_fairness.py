"""The queue's order in process: FIFO within an API key, keys in turn, a slot
handed only to a waiter the worker can serve, bounds and leaving."""

from __future__ import annotations

import asyncio

import pytest

from rbee_queen.errors import QueueFull, QueueTimeout
from rbee_queen.workers.live import LiveWorker
from rbee_queen.workers.queue import QueueLimits, RequestQueue
from rbee_queen.workers.registry import WorkerRegistry
from rbee_queen.workers.states import StateRecorder
from rbee_wire.queen_events import QueenEvent


def worker(node: str = "a", slots: int = 1) -> LiveWorker:
    return LiveWorker("w-" + node, node, "file:/m", 1, 1, slots=slots)


async def served_order(arrivals: list[tuple[str, str]], slot_holder: LiveWorker) -> list[str]:
    """Queue each (key, job) while the one slot is busy, then free it once per job."""
    events: list[QueenEvent] = []
    registry = WorkerRegistry(StateRecorder(lambda *a: None), events.append)
    queue = RequestQueue(registry, events.append, QueueLimits(max_length=16))
    registry.claim(slot_holder, "holder")
    order: list[str] = []

    async def wait(key: str, job: str) -> None:
        live = await queue.wait("file:/m", ["a"], "cpu", key, job, None)
        order.append(job)
        registry.release(live)  # the next waiter's turn

    tasks = []
    for key, job in arrivals:
        tasks.append(asyncio.create_task(wait(key, job)))
        await asyncio.sleep(0)  # queued in this order
    registry.release(slot_holder)
    await asyncio.gather(*tasks)
    assert [e["type"] for e in events].count("request_queued") == len(arrivals)
    return order


async def test_fifo_within_a_key_and_keys_in_turn() -> None:
    burst = [("big", f"b{i}") for i in range(4)]
    arrivals = [*burst, ("small", "s0"), ("small", "s1")]
    order = await served_order(arrivals, worker())
    # The big key's burst came first, yet the small key waits for one of its
    # requests, not for all four.
    assert order == ["b0", "s0", "b1", "s1", "b2", "b3"]
    assert await served_order([("k", f"j{i}") for i in range(5)], worker()) == [
        "j0",
        "j1",
        "j2",
        "j3",
        "j4",
    ]


async def test_a_slot_goes_only_to_a_waiter_its_worker_can_serve() -> None:
    registry = WorkerRegistry(StateRecorder(lambda *a: None), lambda e: None)
    queue = RequestQueue(registry, lambda e: None, QueueLimits())
    on_a, on_b = worker("a"), worker("b")
    registry.claim(on_a, "x")
    registry.claim(on_b, "y")
    wants_b = asyncio.create_task(queue.wait("file:/m", ["b"], "cpu", "k", "jb", None))
    await asyncio.sleep(0)
    wants_a = asyncio.create_task(queue.wait("file:/m", ["a"], "cpu", "k", "ja", None))
    await asyncio.sleep(0)
    registry.release(on_a)  # the older waiter cannot use node a: the younger gets it
    assert await wants_a is on_a and not wants_b.done()
    registry.release(on_b)
    assert await wants_b is on_b


async def test_bounds_and_leaving_hand_the_slot_on() -> None:
    registry = WorkerRegistry(StateRecorder(lambda *a: None), lambda e: None)
    queue = RequestQueue(registry, lambda e: None, QueueLimits(max_length=2, max_wait_s=0.2))
    live = worker()
    registry.claim(live, "holder")
    first = asyncio.create_task(queue.wait("file:/m", ["a"], "cpu", "k", "j1", None))
    second = asyncio.create_task(queue.wait("file:/m", ["a"], "cpu", "k", "j2", None))
    await asyncio.sleep(0)
    with pytest.raises(QueueFull):
        await queue.wait("file:/m", ["a"], "cpu", "k", "j3", None)
    first.cancel()  # e.g. its deadline: it leaves, the next one moves up
    await asyncio.sleep(0)
    assert queue.depth("file:/m") == 1
    registry.release(live)
    assert await second is live and live.in_flight == 1
    with pytest.raises(QueueTimeout):
        await queue.wait("file:/m", ["a"], "cpu", "k", "j4", None)
    assert queue.depth("file:/m") == 0


async def test_a_request_queued_while_earlier_ones_leave_is_not_lost() -> None:
    """Two waiters served at once; the first, once served, queues another
    request before the second has left the queue's books: the newcomer stays
    in the queue the next freed slot is offered from."""
    registry = WorkerRegistry(StateRecorder(lambda *a: None), lambda e: None)
    queue = RequestQueue(registry, lambda e: None, QueueLimits(max_wait_s=1))
    live = worker(slots=2)
    registry.claim(live, "h1")
    registry.claim(live, "h2")

    async def first_then_another() -> LiveWorker:
        served = await queue.wait("file:/m", ["a"], "cpu", "k", "j1", None)
        registry.release(served)
        return await queue.wait("file:/m", ["a"], "cpu", "k", "j3", None)

    one = asyncio.create_task(first_then_another())
    two = asyncio.create_task(queue.wait("file:/m", ["a"], "cpu", "k", "j2", None))
    await asyncio.sleep(0)
    registry.release(live)
    registry.release(live)  # both waiters served in one go
    assert await two is live
    registry.release(live)  # j2 done: its slot must reach j3
    assert await one is live
