"""The queen's inference connection to a worker (fleet/worker_stream.py),
against small HTTP servers on real loopback sockets that misbehave on purpose:
closing kept-alive connections, cutting a body short, speaking nonsense,
sending faster than the reader takes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from rbee_queen.fleet import worker_stream as ws

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


class Server:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> ws.ConnectionPool:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return ws.ConnectionPool(ws.tcp_opener("127.0.0.1", port, []))

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


async def post(pool: ws.ConnectionPool, body: dict[str, object]) -> ws.WorkerStream:
    data = json.dumps(body).encode()
    return await ws.open_stream(pool, "w:1", "/v1/inference", data, [("x-test", "1")])


async def collect(stream: ws.WorkerStream) -> bytes:
    return b"".join([chunk async for chunk in stream.chunks()])


@pytest.fixture
async def keep_alive_server() -> AsyncIterator[tuple[Server, ws.ConnectionPool]]:
    """Answers every request on a connection with two events, keeping it open."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, body = await read_request(reader)
            server.requests.append((head, body))
            writer.write(STREAM_HEAD + chunked(b"data: one\n\n", b"data: two\n\n"))
            await writer.drain()

    server = Server(handler)
    async with server as pool:
        yield server, pool


async def test_a_finished_stream_leaves_its_connection_for_the_next_request(
    keep_alive_server: tuple[Server, ws.ConnectionPool],
) -> None:
    server, pool = keep_alive_server
    for n in range(3):
        stream = await post(pool, {"n": n})
        assert stream.status == 200
        assert await collect(stream) == b"data: one\n\ndata: two\n\n"
        await stream.aclose()
    assert server.connections == 1
    head, body = server.requests[2]
    assert head.startswith(b"POST /v1/inference HTTP/1.1\r\n") and b"x-test: 1\r\n" in head
    assert json.loads(body) == {"n": 2}


async def test_a_stream_left_unfinished_closes_its_connection(
    keep_alive_server: tuple[Server, ws.ConnectionPool],
) -> None:
    """What the client's disconnect does: the worker must see its connection go."""
    server, pool = keep_alive_server
    stream = await post(pool, {})
    await stream.aclose()  # nothing read
    assert pool.idle == [] and stream.conn.closed
    await collect(await post(pool, {}))
    assert server.connections == 2


async def test_a_kept_connection_the_worker_closed_is_retried_once_on_a_new_one() -> None:
    """uvicorn closes idle connections after 5 s; a request sent on one just as
    it closes gets no answer at all and must go again, unseen by the caller.
    This server answers the first request on a connection and closes on the
    second without a byte: the race, every time."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(STREAM_HEAD + chunked(b"data: x\n\n"))
        await writer.drain()
        await read_request(reader)  # then closed, unanswered

    server = Server(handler)
    async with server as pool:
        first = await post(pool, {})
        assert await collect(first) == b"data: x\n\n"
        await first.aclose()
        assert len(pool.idle) == 1
        second = await post(pool, {})
        assert await collect(second) == b"data: x\n\n"
        assert server.connections == 2


async def test_a_request_the_worker_dropped_twice_is_not_sent_a_third_time() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if server.connections > 1:
            await read_request(reader)
            return  # closed, unanswered
        await read_request(reader)
        writer.write(STREAM_HEAD + chunked(b"data: x\n\n"))
        await writer.drain()
        await read_request(reader)

    server = Server(handler)
    async with server as pool:
        await collect(await post(pool, {}))
        with pytest.raises(ws.StreamError, match="closed"):
            await post(pool, {})
        assert server.connections == 2  # the kept one, then one new one


async def test_a_body_cut_short_raises_stream_error_with_what_came_before() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(STREAM_HEAD + b"b\r\ndata: one\n\n\r\n")  # one chunk, no end
        await writer.drain()

    async with Server(handler) as pool:
        stream = await post(pool, {})
        got = []
        with pytest.raises(ws.StreamError, match="closed"):
            async for chunk in stream.chunks():
                got.append(chunk)
        assert got == [b"data: one\n\n"]
        await stream.aclose()
        assert pool.idle == []


async def test_nonsense_instead_of_http_is_a_stream_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()

    async with Server(handler) as pool:
        with pytest.raises(ws.StreamError, match="bad HTTP"):
            await post(pool, {})


async def test_an_error_answer_is_read_whole() -> None:
    error = json.dumps({"error": {"code": "ALL_SLOTS_BUSY", "message": "busy"}}).encode()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        head = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: %d\r\n\r\n" % len(error)
        writer.write(head + error)
        await writer.drain()

    async with Server(handler) as pool:
        stream = await post(pool, {})
        assert stream.status == 503
        assert await stream.read() == error


async def test_nobody_listening_is_a_stream_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    pool = ws.ConnectionPool(ws.tcp_opener("127.0.0.1", port, []))
    with pytest.raises(ws.StreamError, match="cannot connect"):
        await post(pool, {})


async def test_a_slow_reader_pauses_the_worker_and_loses_nothing() -> None:
    """Reading from the worker stops while more than HIGH_WATER waits for the
    client, and starts again once it has been taken."""
    # 48 MB: more than the kernel's socket buffers on both ends can hold (32 + 4 MB).
    pieces = [bytes([65 + i % 26]) * 8192 for i in range(6144)]
    sent = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(STREAM_HEAD + chunked(*pieces))
        await writer.drain()
        sent.set()

    async with Server(handler) as pool:
        stream = await post(pool, {})
        await asyncio.sleep(0.3)  # the server writes as fast as it can meanwhile
        assert stream.conn.paused
        # Over the mark by at most what one read of the socket brings (256 KiB).
        assert stream.conn.buffered <= ws.HIGH_WATER + 256 * 1024
        assert not sent.is_set()  # held back by the paused reader, not buffered here
        assert await collect(stream) == b"".join(pieces)
        assert sent.is_set()


async def test_cancelled_while_waiting_for_the_answer_closes_the_connection() -> None:
    """A deadline or a departed client while the worker has not answered yet:
    the worker sees its connection close (and cancels the job), and nothing
    half-used goes back to the pool."""
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        assert await reader.read() == b""  # EOF: the queen closed its end
        closed.set()

    async with Server(handler) as pool:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await post(pool, {})
        await asyncio.wait_for(closed.wait(), 5)
        assert pool.idle == []
