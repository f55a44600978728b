"""A request's stream, opened with one failover: a worker lost before the
request's first token (it refused or reset the connection, its link was cut,
or its stream broke before a token) costs the client nothing; the request goes
once to another ready worker of the model (or one started on another allowed
node), within the request's deadline (the caller's `before_deadline`). Once a
token has been relayed the client has seen output, and a lost worker ends the
stream with WORKER_DIED or NODE_UNREACHABLE instead (relay.py), never a retry.

Waiting for the first token looks at the connection's buffer without taking
from it, so the relay's per-chunk path is the same with or without this.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from rbee_queen.errors import (
    ConnectionTimeout,
    InferenceFailed,
    NodeError,
    NodeUnreachable,
    RbeeError,
)
from rbee_queen.fleet.worker_stream import StreamError, WorkerStream
from rbee_queen.workers.live import LiveWorker
from rbee_queen.workers.queue import Gone
from rbee_queen.workers.relay import InferenceRelay
from rbee_queen.workers.routing import Router
from rbee_wire.queen_events import RequestFinished

log = logging.getLogger("rbee.queen.failover")
ATTEMPTS = 2  # the first worker and one other
TOKEN = b'"token"'


class Placement(Protocol):
    """Where a request may run (models.catalog.Placement)."""

    @property
    def model_ref(self) -> str: ...
    @property
    def nodes(self) -> list[str]: ...
    @property
    def slots(self) -> int: ...
    @property
    def device(self) -> str: ...


async def open_stream(
    router: Router,
    relay: InferenceRelay,
    where: Placement,
    payload: dict[str, Any],
    *,
    key: str = "",
    gone: Gone | None = None,
) -> tuple[LiveWorker, WorkerStream]:
    """A claimed worker and its stream, its first token (or its end) arrived."""
    job_id = payload["job_id"]
    lost: set[str] = set()
    for attempt in range(1, ATTEMPTS + 1):
        live = await router.acquire(
            where.model_ref,
            where.nodes,
            where.slots,
            job_id,
            where.device,
            key=key,
            gone=gone,
            exclude=lost,
        )
        try:
            response = await relay.open_stream(live, payload)  # releases the slot if it fails
        except RbeeError as exc:
            if attempt == ATTEMPTS or not worker_lost(exc):
                raise
            outcome = exc.code if isinstance(exc, NodeError) else "WORKER_DIED"
            given_up(router, live, job_id, outcome, f"lost before it answered ({exc.message})")
            lost.add(live.worker_id)
            continue
        try:
            await first_token(response)
        except StreamError as exc:
            await response.aclose()
            router.registry.release(live)
            if attempt == ATTEMPTS:
                raise InferenceFailed(f"worker {live.worker_id} stopped before a token") from exc
            given_up(router, live, job_id, "WORKER_DIED", f"lost before its first token ({exc})")
            lost.add(live.worker_id)
            continue
        except BaseException:
            await response.aclose()
            router.registry.release(live)
            raise
        return live, response
    raise AssertionError("unreachable: the last attempt returns or raises")


def given_up(router: Router, live: LiveWorker, job_id: str, outcome: str, why: str) -> None:
    """The lost attempt ends on the books (its `request_started` was published
    at the claim) before the next one starts."""
    log.warning("job %s: worker %s %s; failing over", job_id, live.worker_id, why)
    router.registry.publish(
        RequestFinished(
            type="request_finished",
            job_id=job_id,
            worker_id=live.worker_id,
            node=live.node,
            outcome=outcome,
            tokens_out=0,
            ttft_ms=None,
            decode_time_ms=0,
            tokens_per_s=None,
        )
    )


def worker_lost(exc: RbeeError) -> bool:
    """The worker, or the link to it, is gone (not a refusal it answered)."""
    if isinstance(exc, NodeUnreachable | ConnectionTimeout):
        return True
    return isinstance(exc, InferenceFailed) and isinstance(exc.__cause__, StreamError)


async def first_token(response: WorkerStream) -> None:
    """Until the stream's buffer holds a token, or the stream ended; StreamError
    when it broke first. Nothing is taken from the buffer."""
    conn = response.conn
    while not conn.complete and not any(TOKEN in chunk for chunk in conn.chunks):
        if conn.error is not None:
            raise StreamError(conn.error)
        await conn.wait()
