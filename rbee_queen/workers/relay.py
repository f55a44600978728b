"""The inference relay, the hot path: open a stream on a worker already
claimed, pass its bytes on as they come, and publish what the stream said once
it ends.

Streams run over kept-alive connections of each worker (direct-tcpip channels
on the node's SSH connection, or TCP for a direct node; see
fleet/worker_stream.py). A worker lost mid-stream ends the stream with an
`error` event the client can act on, never a silent cut.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

from rbee_queen import requestcontext as ctx
from rbee_queen.audit import AuditLog
from rbee_queen.errors import (
    AllSlotsBusy,
    InferenceFailed,
    InvalidRequest,
    RbeeError,
    RequestTimeout,
    WorkerOom,
)
from rbee_queen.fleet import worker_stream
from rbee_queen.fleet.worker_stream import StreamError, WorkerStream
from rbee_queen.nodes.inventory import NodeInventory, get_node
from rbee_queen.workers.access import WorkerAccess
from rbee_queen.workers.live import LiveWorker
from rbee_queen.workers.oom import oom_after_lost_stream, oom_mid_stream
from rbee_queen.workers.registry import Publish, PublishBuilt, WorkerRegistry
from rbee_wire import codec, worker_events
from rbee_wire.queen_events import RequestFinished

log = logging.getLogger("rbee.queen.relay")
TAIL_BYTES = 4096  # enough for the worker's `end` event, which closes every stream


class InferenceRelay:
    def __init__(
        self,
        inventory: NodeInventory,
        registry: WorkerRegistry,
        access: WorkerAccess,
        publish: Publish,
        audit: AuditLog,
        check_messages: bool = False,
        publish_built: PublishBuilt | None = None,
    ) -> None:
        self.inventory = inventory
        self.audit = audit
        self.registry = registry
        self.access = access
        self.publish = publish
        self.publish_built = publish_built or (lambda build: publish(build()))
        # Test runs check every worker event against its definition (a cost
        # per chunk, so never on by default).
        self.check_messages = check_messages

    async def open_stream(self, live: LiveWorker, payload: dict[str, Any]) -> WorkerStream:
        """Start an inference on a worker already claimed; errors before the first
        byte release the claim and raise. The request's correlation id and
        deadline go along as headers."""
        body = codec.encode(payload).encode()
        try:
            await self._reattach(live)  # may move the forward: the address comes after
            host, port = live.address
            headers = [("content-type", "application/json"), *ctx.outgoing_headers().items()]
            token = self.access.tokens.token_at(host, port)
            if token is not None:
                headers.append(("authorization", f"Bearer {token}"))
            response = await worker_stream.open_stream(
                live.stream_pool(), f"{host}:{port}", "/v1/inference", body, headers
            )
        except StreamError as exc:
            self.registry.release(live)
            raise InferenceFailed(f"worker {live.worker_id} did not answer: {exc}") from exc
        except BaseException:
            self.registry.release(live)
            raise
        if response.status != 200:
            self.registry.release(live)
            try:
                answer = await response.read()
            except StreamError:
                answer = b""
            finally:
                await response.aclose()
            raise worker_error(response.status, answer)
        # With the request's correlation id, like every line logged for it.
        job_id = payload["job_id"]
        log.info("job %s: streaming from worker %s on %s", job_id, live.worker_id, live.node)
        self.audit.record_soon(  # ids and counts only: never the prompt's text
            "inference.started",
            job_id=job_id,
            worker_id=live.worker_id,
            node=live.node,
            model_ref=live.model_ref,
            prompt_chars=len(str(payload.get("prompt", ""))),
        )
        return response

    async def relay(
        self, live: LiveWorker, response: WorkerStream, job_id: str
    ) -> AsyncGenerator[bytes, None]:
        """The worker's bytes as they come, and what they said once they end."""
        sent = 0
        started = time.monotonic()
        first_token_s: float | None = None
        tail = b""  # the end of the stream, where the worker's `end` event is
        outcome = "CANCELLED"  # the client went away, unless the stream says otherwise
        try:
            try:
                async for chunk in response.chunks():
                    sent += len(chunk)
                    self.registry.mark_progress(live.worker_id)
                    tail = (tail + chunk)[-TAIL_BYTES:]
                    if first_token_s is None and b'"token"' in chunk:
                        first_token_s = time.monotonic() - started
                    if self.check_messages:
                        _check_worker_events(chunk)
                    yield chunk
            except StreamError as exc:
                outcome, message, details = await self._lost(live, exc)
                yield worker_events.error(outcome, message, details)
            else:
                outcome = "INCOMPLETE"
        finally:
            await response.aclose()
            self.audit.record_soon("inference.completed", worker_id=live.worker_id, bytes=sent)
            self.registry.release(live)
            # The figures are read from the stream's last bytes when they are
            # handed on, a moment after the client has them; their place among
            # the events is taken now, after release()'s.
            self.publish_built(lambda: self._finished(live, job_id, tail, outcome, first_token_s))

    async def _lost(
        self, live: LiveWorker, exc: StreamError
    ) -> tuple[str, str, dict[str, Any] | None]:
        """Why a stream broke: the node's link (its connection closes its forwards
        first, itself a moment later), the node's OOM killer (the worker's memory
        group counted it), or the worker itself."""
        session = live.session
        if session is not None:
            for _ in range(10):
                if not session.alive:
                    why = f"lost the connection to node {live.node} mid-stream"
                    return "NODE_UNREACHABLE", why, None
                await asyncio.sleep(0.05)
            report = await oom_after_lost_stream(session, live.worker_id)
            if report is not None:
                return WorkerOom.code, *oom_mid_stream(live.worker_id, live.node, report)
        return "WORKER_DIED", f"worker {live.worker_id} stopped mid-stream ({exc})", None

    def _finished(
        self, live: LiveWorker, job_id: str, tail: bytes, outcome: str, first_token_s: float | None
    ) -> RequestFinished:
        end = worker_events.last_of(tail, "end") or {}
        error = None if end else worker_events.last_of(tail, "error")
        if end:
            outcome = str(end.get("stop_reason", outcome))
        elif error:
            outcome = str(error.get("code", outcome))
        tokens = int(end.get("tokens_out") or 0)
        decode_ms = int(end.get("decode_time_ms") or 0)
        return RequestFinished(
            type="request_finished",
            job_id=job_id,
            worker_id=live.worker_id,
            node=live.node,
            outcome=outcome,
            tokens_out=tokens,
            ttft_ms=round(first_token_s * 1000, 2) if first_token_s is not None else None,
            decode_time_ms=decode_ms,
            tokens_per_s=round(tokens / (decode_ms / 1000), 1) if decode_ms else None,
        )

    async def _reattach(self, live: LiveWorker) -> None:
        """Forward to a worker again once its node's connection was lost and made
        anew: the worker kept running on the node, so it keeps its id and slots."""
        if live.session is None or live.session.alive:
            return
        session = await self.inventory.session_for(get_node(live.node))  # NODE_UNREACHABLE if cut
        if live.session is session:
            return
        if live.direct_host is not None:  # reached without a forward: nothing to redo
            live.drop_streams()
            live.session = session
            return
        status = await session.ops.worker_status(worker_id=live.worker_id, run_dir=session.run_dir)
        token = self.access.token_file.load().get(live.worker_id)
        if not status["alive"] or token is None:
            raise InferenceFailed(f"worker {live.worker_id} is gone from {live.node}")
        live.drop_streams()  # they ran over the connection that was lost
        self.access.tokens.forget(live.local_port)
        live.local_port = await self.access.forward(session, live.remote_port, token)
        live.session = session
        log.info("worker %s: forwarded again after its node reconnected", live.worker_id)


def _check_worker_events(chunk: bytes) -> None:
    for message in codec.sse_messages(chunk):
        for problem in worker_events.problems(message):
            log.error("message contract violated: %s in %s", problem, message)


def worker_error(status: int, body: bytes) -> RbeeError:
    """A worker's refusal (an error envelope) as the queen's error."""
    error = (codec.decode_object(body) or {}).get("error") or {}
    message = str(error.get("message") or f"worker answered HTTP {status}")
    details = error.get("details") or {}
    code = error.get("code")
    if code == "ALL_SLOTS_BUSY":
        return AllSlotsBusy(message, **details)
    if code == "REQUEST_TIMEOUT":
        return RequestTimeout(message)
    if status == 400:
        return InvalidRequest(message, **details)
    return InferenceFailed(message, worker_code=code)
