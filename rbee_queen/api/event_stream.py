"""The response of an inference stream: the relay's pieces as they come, sent
with as few writes and wake-ups as a stream allows.

Starlette's StreamingResponse (under uvicorn's ASGI 2.3) runs an anyio task
group per response to notice a client that leaves, and sends its head before
asking for the first piece: a per-hop trace put 0.18-0.24 ms between the
failover seeing the first token and the head leaving. Here the first piece,
already in the worker connection's buffer when the route answers (the
failover waited for it), is taken before the head, so the two leave back to
back (still two writes: uvicorn writes each message at once; corking them
into one segment measured no gain and was not kept); one plain task waits
for the client to leave; and the piece that ends the stream (`[DONE]`,
always in the worker's last piece) goes out with the chunked body's end, one
write instead of two. The stream is still read to its end after that, so the
worker's connection is kept for its next request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from rbee_wire.codec import SSE_DONE

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class EventStreamResponse(Response):
    """An ASGI response over `body`, an async generator of SSE bytes."""

    def __init__(self, body: AsyncGenerator[bytes, None]) -> None:  # no super(): no body
        self.body_iterator = body
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

    async def _send_all(self, send: Send, watcher: asyncio.Task[None]) -> None:
        body = self.body_iterator
        piece: bytes | None = await anext(body, b"")
        assert piece is not None
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
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
