"""The response of an inference stream: its head as soon as a worker accepted
the request, then the relay's pieces as they come, with as few writes and
wake-ups as a stream allows.

The head leaves while the worker prefills, not with the first token: a client
parses a response's head before its body (httpx took 0.3-0.4 ms here), and a
head sent with the first token put that parse on the path of every first
token, where a worker's own head, sent at once, hides it behind the prefill
(`docs/benchmarks.md`). The body's first piece is the failover's to give
(workers/failover.py): an error before it is rendered by `on_error` in the
route's shape as the stream's one event. One plain task (not Starlette's anyio
task group) waits for the client to leave, and the piece that ends the stream
(`[DONE]`, always in the worker's last piece) goes out with the chunked body's
end, one write instead of two. The stream is still read to its end after
that, so the worker's connection is kept for its next request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from rbee_queen.errors import RbeeError
from rbee_wire.codec import SSE_DONE

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class EventStreamResponse(Response):
    """An ASGI response over `body`, an async generator of SSE bytes. `on_error`
    renders an RbeeError that `body` raises before its first piece; `release`
    runs at the end, for what a body that never started would have let go."""

    def __init__(  # no super(): no body
        self,
        body: AsyncGenerator[bytes, None],
        on_error: Callable[[RbeeError], bytes],
        release: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.body_iterator = body
        self.on_error = on_error
        self.release = release
        self.status_code = 200
        self.raw_headers = list(SSE_HEADERS)
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        left = asyncio.Event()
        watcher = asyncio.get_running_loop().create_task(_watch(receive, task, left))
        try:
            await self._send_all(send, watcher)
        except asyncio.CancelledError:
            if not left.is_set():
                raise  # cancelled from outside (the server stopping): not ours to hide
            task.uncancel()  # the client left; the relay's own cleanup has run
        finally:
            watcher.cancel()
            await self.body_iterator.aclose()
            if self.release is not None:
                await self.release()

    async def _send_all(self, send: Send, watcher: asyncio.Task[None]) -> None:
        body = self.body_iterator
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        try:
            piece: bytes | None = await anext(body, b"")
        except RbeeError as exc:
            piece = self.on_error(exc)
        assert piece is not None
        last = await _send_piece(send, piece)
        while not last:
            piece = await anext(body, None)
            if piece is None:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            last = await _send_piece(send, piece)
        # The client has it all (and uvicorn now answers `receive` with a
        # disconnect): stop watching, then read the stream to its end so the
        # worker's connection is kept for its next request.
        watcher.cancel()
        async for _ in body:
            pass


async def _send_piece(send: Send, piece: bytes) -> bool:
    """Sends one piece; the one that ends the stream ends the body too."""
    last = piece.endswith(SSE_DONE)
    await send({"type": "http.response.body", "body": piece, "more_body": not last})
    return last


async def _watch(receive: Receive, task: asyncio.Task[None], left: asyncio.Event) -> None:
    """Cancels the response's task once the client has gone."""
    while (await receive())["type"] != "http.disconnect":
        pass
    left.set()
    task.cancel()
