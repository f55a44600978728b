"""One job's token stream: blocking generation in a thread, events to the client.

The backend's generation loop blocks, so it runs in its own thread and hands each
event to the event loop through an asyncio.Queue as soon as it exists; the
response sends them on. Whatever ends the response (the last event, the client
going away, a server shutdown) sets the job's cancel flag, so the generation
stops at the next token boundary and frees the slot.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from rbee_worker import events
from rbee_worker.backends.base import Backend, GenerationResult
from rbee_worker.errors import INFERENCE_FAILED, one_line
from rbee_worker.jobs import Job, Slots
from rbee_worker.params import InferenceRequest

log = logging.getLogger(__name__)


class JobStream:
    def __init__(self, backend: Backend, request: InferenceRequest, job: Job, slots: Slots) -> None:
        self._backend = backend
        self._request = request
        self._job = job
        self._slots = slots
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def start(self) -> None:
        name = f"job-{self._job.job_id[:32]}"
        threading.Thread(target=self._run, name=name, daemon=True).start()

    async def events(self) -> AsyncIterator[bytes]:
        try:
            yield events.started(self._job.job_id, self._backend.model_name)
            while (item := await self._queue.get()) is not None:
                yield item
            yield events.DONE
        finally:
            self._job.cancel.set()

    # --- the generation thread ---------------------------------------------------

    def _run(self) -> None:
        try:
            last = self._generate()
        finally:
            # Released before the last event is sent, so a client that saw the
            # end of its stream can start the next job at once.
            self._slots.release(self._job)
        self._put(last)
        self._put(None)

    def _generate(self) -> bytes:
        job_id = self._job.job_id
        started = time.monotonic()
        try:
            generation = self._backend.generate(
                self._request.prompt, self._request.params, self._job.cancel
            )
            index = 0
            while True:
                try:
                    piece = next(generation)
                except StopIteration as stop:
                    result = stop.value
                    break
                self._put(events.token(piece, index))
                index += 1
            if not isinstance(result, GenerationResult):
                raise TypeError("the backend returned no generation result")
        except Exception as exc:
            log.error("job %s failed: %s", job_id, one_line(exc), exc_info=True)
            return events.error(INFERENCE_FAILED, one_line(exc))
        elapsed_ms = round((time.monotonic() - started) * 1000)
        log.info(
            "job %s finished: stop_reason=%s tokens_out=%d decode_time_ms=%d",
            job_id,
            result.stop_reason.value,
            result.tokens_out,
            elapsed_ms,
        )
        return events.end(result, elapsed_ms)

    def _put(self, item: bytes | None) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone: nobody is listening any more
            self._job.cancel.set()


class JobStreamResponse(StreamingResponse):
    """A streaming response that cancels its job however the response ends,
    even when the body was never started (the client left before the first byte)."""

    def __init__(self, stream: JobStream, job: Job) -> None:
        super().__init__(
            stream.events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._job = job

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._job.cancel.set()
