"""The queen's hot path to a worker: one inference request and its event stream
over a kept-alive HTTP/1.1 connection, parsed by httptools (the C parser
uvicorn uses), with each worker's idle connections kept for the next request.

Control calls (health, ready, cancel, metrics) go through httpx; this path
carries every token of every request, where httpx cost the queen about 85 us
per token (a cProfile of the relay; docs/benchmarks.md has the figures since).
A worker behind SSH is reached over a direct-tcpip channel of the node's
connection (no local socket in between); a worker set to direct access over
TCP with the same keepalives as before.

Chunks that arrive while the client is still being sent earlier ones are
handed on together: one write to the client instead of several.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Protocol

import httptools

CONNECT_TIMEOUT_S = 10.0
# Reading from the worker pauses while this much is waiting for a slow client,
# and resumes once the client has taken it.
HIGH_WATER = 256 * 1024


class StreamError(Exception):
    """The worker could not be reached, or its connection broke or spoke nonsense."""


class Transport(Protocol):
    """What an asyncio transport and an asyncssh channel have in common here."""

    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def is_closing(self) -> bool: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


Opener = Callable[[Callable[[], "Connection"]], Awaitable["Connection"]]


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection to a worker, as an asyncio protocol and as an
    asyncssh session alike (their callbacks differ only in `datatype`)."""

    def __init__(self) -> None:
        self.transport: Transport | None = None
        self.closed = False
        self.error: str | None = None
        self.reused = False  # served a response before: a stale close may be met
        self._reset()

    def _reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.keep_alive = False
        self.headers_done = False
        self.complete = False
        self.received_any = False
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.paused = False
        self._waiter: asyncio.Future[None] | None = None

    # --- transport callbacks (asyncio and asyncssh) ---------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def session_started(self) -> None:  # asyncssh only
        pass

    def data_received(self, data: bytes, datatype: object = None) -> None:
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(f"bad HTTP from the worker: {exc}")
            self.close()
        self._wake()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        if not self.complete:
            self._fail(f"connection closed: {exc}" if exc else "connection closed by the worker")
        self._wake()

    def pause_writing(self) -> None:
        pass  # requests are small: nothing to hold back

    def resume_writing(self) -> None:
        pass

    # --- parser callbacks ------------------------------------------------------

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        # Read here: once the message is complete the parser has moved on.
        self.keep_alive = self.parser.should_keep_alive()
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        self.complete = True

    # --- used by WorkerStream --------------------------------------------------

    def _fail(self, message: str) -> None:
        if self.error is None:
            self.error = message

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Until something arrives, the response ends or the connection breaks."""
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def take(self) -> bytes:
        data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    def send(self, request: bytes) -> None:
        assert self.transport is not None
        self._reset()
        self.transport.write(request)

    def reusable(self) -> bool:
        return (
            self.complete
            and self.error is None
            and not self.closed
            and self.transport is not None
            and not self.transport.is_closing()
            and self.keep_alive
        )

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True


class ConnectionPool:
    """A worker's idle connections; `opener` makes a new one."""

    def __init__(self, opener: Opener) -> None:
        self.opener = opener
        self.idle: list[Connection] = []

    async def connection(self) -> Connection:
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                return await self.opener(Connection)
        except TimeoutError:
            raise StreamError(f"no connection within {CONNECT_TIMEOUT_S:g}s") from None
        except OSError as exc:  # a socket's, or an SSH channel refused (fleet/session.py)
            raise StreamError(f"cannot connect: {exc}") from exc

    def put_back(self, conn: Connection) -> None:
        conn.reused = True
        self.idle.append(conn)

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


class WorkerStream:
    """A response whose headers have arrived; its body is read as it comes."""

    def __init__(self, pool: ConnectionPool, conn: Connection) -> None:
        self.pool = pool
        self.conn = conn
        self.status = conn.status
        self._released = False

    async def read(self) -> bytes:
        """The whole body (an error answer's JSON)."""
        parts = [chunk async for chunk in self.chunks()]
        return b"".join(parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; what piled up meanwhile comes as one piece.
        StreamError when the connection breaks before the body's end."""
        conn = self.conn
        while True:
            if conn.chunks:
                yield conn.take()
                continue
            if conn.complete:
                return
            if conn.error is not None:
                raise StreamError(conn.error)
            await conn.wait()

    async def aclose(self) -> None:
        """Done with the response: a complete one leaves its connection for the
        next request; anything else closes it, which tells the worker the
        client left (it cancels the job)."""
        if self._released:
            return
        self._released = True
        if self.conn.reusable() and not self.conn.chunks:
            self.pool.put_back(self.conn)
        else:
            self.conn.close()


def request_bytes(
    method: str, host: str, path: str, body: bytes, headers: Iterable[tuple[str, str]]
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"host: {host}", f"content-length: {len(body)}"]
    for name, value in headers:
        if "\r" in value or "\n" in value:
            raise ValueError(f"header {name} would break the request")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def open_stream(
    pool: ConnectionPool,
    host: str,
    path: str,
    body: bytes,
    headers: Iterable[tuple[str, str]],
) -> WorkerStream:
    """POST `body` and wait for the answer's headers. A kept connection that the
    worker closed meanwhile (its idle timeout) is met before any answer: then
    the request goes once more on a new one (the worker never saw it)."""
    request = request_bytes("POST", host, path, body, headers)
    for attempt in (1, 2):
        conn = await pool.connection()
        conn.send(request)
        try:
            while not conn.headers_done and conn.error is None:
                await conn.wait()
        except BaseException:
            # Cancelled (a deadline, the client gone): the worker must see the
            # connection close, or it would generate for nobody in a held slot.
            conn.close()
            raise
        if conn.headers_done:
            return WorkerStream(pool, conn)
        conn.close()
        if not (conn.reused and not conn.received_any and attempt == 1):
            raise StreamError(conn.error or "no answer")
    raise AssertionError("unreachable")


def tcp_opener(host: str, port: int, socket_options: list[tuple[int, int, int]]) -> Opener:
    async def open_tcp(factory: Callable[[], Connection]) -> Connection:
        loop = asyncio.get_running_loop()
        transport, conn = await loop.create_connection(factory, host, port)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for level, option, value in socket_options:
                    sock.setsockopt(level, option, value)
        return conn

    return open_tcp
