"""bench.relay's client (bench/sse_client.py) against a loopback server that
answers with the worker's own event encoding: the times and counts it reads,
a new connection once the server has closed an idle one, and a refusal."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from bench.sse_client import SseClient
from rbee_wire import codec, worker_events
from rbee_wire.worker_events import End, Token, Usage

TOKENS = 3


def _stream_body() -> bytes:
    tokens = [worker_events.encode(Token(type="token", t=f"w{i}", i=i)) for i in range(TOKENS)]
    usage = Usage(
        prompt_tokens=4,
        completion_tokens=TOKENS,
        total_tokens=4 + TOKENS,
        time_to_first_token_ms=1,
        tokens_per_second=100.0,
    )
    end = End(
        type="end", tokens_out=TOKENS, decode_time_ms=7, stop_reason="MAX_TOKENS", usage=usage
    )
    return b"".join([*tokens, worker_events.encode(end), codec.SSE_DONE])


class Server:
    """Answers each request on a connection, then closes it, as a server does
    a kept-alive connection left idle; `status` other than 200 answers JSON."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.status = 200
        self.connections = 0
        self.closed = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                self._answer(conn)
            self.closed.set()

    def _answer(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(4096)
        head, body = data.split(b"\r\n\r\n", 1)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += conn.recv(4096)
        if self.status != 200:
            conn.sendall(f"HTTP/1.1 {self.status} Nope\r\ncontent-length: 2\r\n\r\n{{}}".encode())
            return
        conn.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for piece in _stream_body().split(b"\n\n")[:-1]:  # one chunk per event
            frame = piece + b"\n\n"
            conn.sendall(b"%x\r\n%s\r\n" % (len(frame), frame))
        conn.sendall(b"0\r\n\r\n")


@pytest.fixture
def server() -> Iterator[Server]:
    served = Server()
    yield served
    served.listener.close()


def test_it_reads_the_stream_and_opens_a_new_connection_once_the_old_one_closed(
    server: Server,
) -> None:
    client = SseClient(server.port, "t0ken")
    try:
        for expected_connections in (1, 2):
            server.closed.clear()
            first, end, tokens, decode_ms, last = client.stream("/v1/inference", {"prompt": "x"})
            assert 0 < first <= last <= end
            assert (tokens, decode_ms) == (TOKENS, 7)
            assert server.closed.wait(5)
            time.sleep(0.05)  # the close reaches the client's socket
            assert server.connections == expected_connections
    finally:
        client.close()


def test_a_refused_request_raises_with_its_status(server: Server) -> None:
    server.status = 401
    client = SseClient(server.port, "t0ken")
    with pytest.raises(RuntimeError, match="answered 401"):
        client.stream("/v2/tasks", {})
    assert not client.opened  # closed with the failed request
