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
from collections.abc import AsyncIterator, Callable
from typing import cast

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from rbee_worker import events
from rbee_worker.backends.base import Backend, GenerationResult, StopReason, VramOom
from rbee_worker.errors import INFERENCE_FAILED, REQUEST_TIMEOUT, VRAM_OOM, one_line
from rbee_worker.jobs import Job, Slots
from rbee_worker.params import InferenceRequest

log = logging.getLogger(__name__)
# How long the generation thread waits, after the first token, for the event
# loop to have written it. The loop's thread needs the GIL to write it, and a
# generation thread that goes straight on to the next token keeps the GIL for
# up to the switch interval each time it takes it back: traces put 0.08-2.9 ms
# between the first token made and its loop having it (docs/benchmarks.md).
# Waiting hands the GIL over; it is bounded for a client that reads nothing.
FIRST_TOKEN_HANDOFF_S = 0.005


class JobStream:
    def __init__(
        self,
        backend: Backend,
        request: InferenceRequest,
        job: Job,
        slots: Slots,
        deadline: float | None = None,
    ) -> None:
        self._backend = backend
        self._request = request
        self._job = job
        self._slots = slots
        self._deadline = deadline  # Unix time in seconds, or None
        self._timed_out = False
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._accepted = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._first_sent = threading.Event()  # the first token's write has returned

    def start(self) -> None:
        if self._deadline is not None:
            # A timer rather than a check per token: a stuck prefill is cut too.
            delay = max(0.0, self._deadline - time.time())
            self._timer = self._loop.call_later(delay, self._expire)
        name = f"job-{self._job.job_id[:32]}"
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def _expire(self) -> None:
        self._timed_out = True
        self._job.cancel.set()

    async def events(self) -> AsyncIterator[bytes]:
        try:
            yield events.started(self._job.job_id, self._backend.model_name)
            while True:
                # Whatever queued while the last send went out leaves in one
                # write (the last event and [DONE] always together): one send
                # and one wake-up of the reader instead of one per event.
                batch = [await self._queue.get()]
                while batch[-1] is not None and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                if batch[-1] is None:
                    yield b"".join(cast(list[bytes], batch[:-1])) + events.DONE
                    return
                yield b"".join(cast(list[bytes], batch))
                if not self._first_sent.is_set():  # resumed: the batch was written
                    self._first_sent.set()
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
            if self._timer is not None:
                self._call_in_loop(self._timer.cancel)
        # One call for both: `events()` then finds them queued together and
        # sends them in one write. Two calls let the loop send the last event
        # alone (each call wakes it, and hands it the GIL), then [DONE] in a
        # second write, a second wake-up of every reader on the way.
        self._call_in_loop(self._finish, last)

    def _finish(self, last: bytes) -> None:
        """(In the event loop.) The last event, then the end of the queue."""
        self._queue.put_nowait(last)
        self._queue.put_nowait(None)

    def _generate(self) -> bytes:
        job, cid = self._job.job_id, self._job.correlation_id
        started = time.monotonic()
        first_token_ms: int | None = None
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
                if first_token_ms is None:
                    first_token_ms = round((time.monotonic() - self._accepted) * 1000)
                    self._first_sent.wait(FIRST_TOKEN_HANDOFF_S)
            if not isinstance(result, GenerationResult):
                raise TypeError("the backend returned no generation result")
        except VramOom as exc:  # the backend let go of the request's memory already
            log.error("job %s cid=%s ran out of GPU memory: %s", job, cid, one_line(exc))
            return events.error(VRAM_OOM, one_line(exc))
        except Exception as exc:
            log.error("job %s cid=%s failed: %s", job, cid, one_line(exc), exc_info=True)
            return events.error(INFERENCE_FAILED, one_line(exc))
        elapsed_ms = round((time.monotonic() - started) * 1000)
        if self._timed_out and result.stop_reason is StopReason.CANCELLED:
            log.warning("job %s cid=%s passed its deadline after %d tokens", job, cid, index)
            return events.error(REQUEST_TIMEOUT, "the request deadline passed; generation stopped")
        log.info(
            "job %s cid=%s finished: stop_reason=%s prompt_tokens=%d tokens_out=%d "
            "first_token_ms=%s decode_time_ms=%d",
            job,
            cid,
            result.stop_reason.value,
            result.prompt_tokens,
            result.tokens_out,
            first_token_ms,
            elapsed_ms,
        )
        return events.end(result, elapsed_ms, first_token_ms)

    def _put(self, item: bytes | None) -> None:
        self._call_in_loop(self._queue.put_nowait, item)

    def _call_in_loop(self, callback: Callable[..., object], *args: object) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
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

    async def stream_response(self, send: Send) -> None:
        """As Starlette's, but the last piece (the one with `[DONE]`) leaves with
        the chunked body's end: one write, and the reader sees the response
        complete as it reads the last event."""
        head = {"type": "http.response.start", "status": self.status_code}
        await send({**head, "headers": self.raw_headers})
        async for piece in self.body_iterator:
            last = isinstance(piece, bytes) and piece.endswith(events.DONE)
            await send({"type": "http.response.body", "body": piece, "more_body": not last})
            if last:
                async for _ in self.body_iterator:  # nothing follows [DONE]
                    pass
                return
        await send({"type": "http.response.body", "body": b"", "more_body": False})
