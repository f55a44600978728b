"""A request's stream, opened with one failover: a worker lost before the
request's first token (it refused or reset the connection, its link was cut,
or its stream broke before a token) costs the client nothing; the request goes
once to another ready worker of the model (or one started on another allowed
node), within the request's deadline. Once a token has been relayed the client
has seen output, and a lost worker ends the stream with WORKER_DIED or
NODE_UNREACHABLE instead (relay.py), never a retry.

Two steps, so that the response's head can leave while the worker prefills:
`open` claims a worker and returns once it accepted the request (its answer's
head came back); errors until then are the route's error answers. The body
(`stream`) then waits for the first token, failing over if the worker is lost
before it; the client has only the head then, so an attempt that fails after
all is the stream's one `error` event, raised as the RbeeError for the route
to render in its own shape. Waiting for the first token looks at the
connection's buffer without taking from it, so the relay's per-chunk path is
the same with or without this.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
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
from rbee_queen.workers.routing import Router, before_deadline
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


class FailoverStream:
    """One request's attempts: the worker that accepted it and its stream."""

    def __init__(
        self,
        router: Router,
        relay: InferenceRelay,
        where: Placement,
        payload: dict[str, Any],
        *,
        key: str = "",
    ) -> None:
        self.router = router
        self.relay = relay
        self.where = where
        self.payload = payload
        self.key = key
        self.job_id: str = payload["job_id"]
        self.attempts = 0
        self.lost: set[str] = set()
        self.live: LiveWorker | None = None
        self.response: WorkerStream | None = None

    async def open(self, gone: Gone | None = None) -> None:
        """Claim a worker and send it the request, until one accepts it; a
        worker lost before it answered is replaced once. `gone` says the client
        left while the request waits for a slot."""
        while True:
            self.attempts += 1
            live = await self.router.acquire(
                self.where.model_ref,
                self.where.nodes,
                self.where.slots,
                self.job_id,
                self.where.device,
                key=self.key,
                gone=gone,
                exclude=self.lost,
            )
            try:  # open_stream releases the claim when it fails
                self.response = await self.relay.open_stream(live, self.payload)
            except RbeeError as exc:
                lost = worker_lost(exc)
                outcome = exc.code if isinstance(exc, NodeError) or not lost else "WORKER_DIED"
                self._finished(live, outcome)
                if self.attempts >= ATTEMPTS or not lost:
                    raise
                self._failing_over(live, f"lost before it answered ({exc.message})")
                continue
            except BaseException:
                self._finished(live, "CANCELLED")
                raise
            self.live = live
            return

    async def first_token(self) -> tuple[LiveWorker, WorkerStream]:
        """The accepted worker and its stream once its first token (or its end)
        is in the buffer; a worker whose stream breaks first is replaced once.
        The client's leaving cancels this (the response watches for it)."""
        while True:
            live, response = self.live, self.response
            assert live is not None and response is not None, "open() first"
            try:
                await first_token(response)
                return live, response
            except StreamError as exc:
                await self._drop(live, response, "WORKER_DIED")
                if self.attempts >= ATTEMPTS:
                    why = f"worker {live.worker_id} stopped before a token"
                    raise InferenceFailed(why) from exc
                self._failing_over(live, f"lost before its first token ({exc})")
            except BaseException:
                await self._drop(live, response, "CANCELLED")
                raise
            await self.open()

    async def _drop(self, live: LiveWorker, response: WorkerStream, outcome: str) -> None:
        self.live = self.response = None
        await response.aclose()
        self.router.registry.release(live)
        self._finished(live, outcome)

    def _failing_over(self, live: LiveWorker, why: str) -> None:
        log.warning("job %s: worker %s %s; failing over", self.job_id, live.worker_id, why)
        self.lost.add(live.worker_id)

    def _finished(self, live: LiveWorker, outcome: str) -> None:
        """A claim that ended before its stream was relayed, on the books (its
        `request_started` was published at the claim); the relay publishes the
        rest."""
        self.router.registry.publish(
            RequestFinished(
                type="request_finished",
                job_id=self.job_id,
                worker_id=live.worker_id,
                node=live.node,
                outcome=outcome,
                tokens_out=0,
                ttft_ms=None,
                decode_time_ms=0,
                tokens_per_s=None,
            )
        )

    async def stream(self) -> AsyncGenerator[bytes, None]:
        """The worker's bytes from its first token on, within the request's
        deadline until then; RbeeError, before any byte, when no attempt gave
        a first token."""
        async with before_deadline():
            live, response = await self.first_token()
        self.live = self.response = None  # the relay's from here: it releases them
        body = self.relay.relay(live, response, self.job_id)
        try:
            async for chunk in body:
                yield chunk
        finally:
            await body.aclose()

    async def close(self) -> None:
        """Lets the accepted worker go if the body never started (the client left
        before the response began); once it has, the relay or `_drop` did."""
        if self.live is not None and self.response is not None:
            await self._drop(self.live, self.response, "CANCELLED")


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
