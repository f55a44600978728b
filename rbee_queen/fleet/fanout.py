"""Run one operation on many nodes at once, with a result or an error per node.

Like Fabric's group results: `.succeeded` and `.failed` keep every node's
outcome, and one dead node never fails the others or delays them beyond its
own timeout. Each node's operation runs inside the pool's concurrency slots.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from rbee_queen.errors import ConnectionTimeout, NodeUnreachable, RbeeError
from rbee_queen.fleet.pool import SessionPool
from rbee_queen.fleet.session import NodeSession, NodeTarget

T = TypeVar("T")
Operation = Callable[[NodeSession], Awaitable[T]]


@dataclass(frozen=True)
class NodeOutcome(Generic[T]):
    node: str
    value: T | None
    error: RbeeError | None
    elapsed_ms: float

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class GroupResult(Generic[T]):
    outcomes: dict[str, NodeOutcome[T]] = field(default_factory=dict)

    @property
    def succeeded(self) -> dict[str, T]:
        return {n: o.value for n, o in self.outcomes.items() if o.error is None}  # type: ignore[misc]

    @property
    def failed(self) -> dict[str, RbeeError]:
        return {n: o.error for n, o in self.outcomes.items() if o.error is not None}


async def fan_out(
    pool: SessionPool,
    targets: Sequence[NodeTarget],
    operation: Operation[T],
    *,
    timeout: float,
    on_done: Callable[[NodeOutcome[T]], None] | None = None,
) -> GroupResult[T]:
    """`operation(session)` on every target at once; each node gets `timeout` seconds
    for its connect (when it has no session yet) and its operation together."""

    async def one(target: NodeTarget) -> NodeOutcome[T]:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):  # no extra task, unlike wait_for
                value = await _on_node(pool, target, operation)
            outcome = NodeOutcome(target.name, value, None, _ms(started))
        except TimeoutError:
            # A session that stops answering is most likely on a dead link:
            # drop it so the next call reconnects instead of waiting again.
            pool.discard(target.name)
            error = ConnectionTimeout(f"{target.name} did not answer within {timeout:g}s")
            outcome = NodeOutcome(target.name, None, error, _ms(started))
        except RbeeError as error:
            if isinstance(error, NodeUnreachable):
                pool.discard(target.name)
            outcome = NodeOutcome(target.name, None, error, _ms(started))
        except Exception as exc:  # noqa: BLE001 - reported per node, never raised
            unexpected = RbeeError(f"{target.name}: {type(exc).__name__}: {exc}")
            outcome = NodeOutcome(target.name, None, unexpected, _ms(started))
        if on_done is not None:
            on_done(outcome)
        return outcome

    outcomes = await asyncio.gather(*(one(t) for t in targets))
    return GroupResult({o.node: o for o in outcomes})


async def _on_node(pool: SessionPool, target: NodeTarget, operation: Operation[T]) -> T:
    async with pool.slot(target.name):
        session = await pool.get(target)
        return await operation(session)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
