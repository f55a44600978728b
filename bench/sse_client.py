"""The client bench.relay times its streamed requests with: one kept-alive
socket per thread and server, the answer parsed by httptools (C) and its SSE
frames split as bytes; only each event's JSON is decoded, as every path's
events are read the same way. A request leaves as httpx sends one, its head
and its body in two writes (the OpenAI clients are httpx): a server woken by
the head alone has that wake-up to pay, as with them.

Why not httpx: on this machine the client shares a CPU with the queen (the
bench pins the workers alone on the other), and httpx reads a 64-token stream
with 1.25-1.75 ms of Python (h11, its line decoder), run between the queen's own
steps, on the queen's CPU and out of its caches. On a path straight to a
worker the client has that CPU to itself, so the client's own cost landed on
the queen's paths alone, as the queen's (`docs/benchmarks.md`). `--client
httpx` still times with httpx, to compare.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from typing import Any

import httptools

# First token s, end s, tokens, the worker's decode time (ms), last token s.
Sample = tuple[float, float, int, float, float]
TIMEOUT_S = 300.0


class Tally:
    """A stream's times and counts, from its events as they are read: every
    path's the same way, whichever client reads them."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first: float | None = None
        self.last: float | None = None
        self.tokens = 0
        self.decode_ms = 0.0

    def line(self, line: bytes | str) -> None:
        """One SSE line or frame; only `data: {...}` ones count."""
        if line[:7] not in (b"data: {", "data: {"):
            return
        event = json.loads(line[6:])
        if event.get("type") == "token" or event.get("choices"):
            self.last = time.perf_counter()
            self.first = self.first or self.last
        if event.get("type") == "end":
            self.tokens, self.decode_ms = event["tokens_out"], event["decode_time_ms"]
        elif event.get("usage"):
            self.tokens = event["usage"]["completion_tokens"]
            # OpenAI's usage has no decode time: that column stays empty.

    def sample(self) -> Sample:
        """The request's Sample, its end now."""
        end = time.perf_counter()
        first, last = self.first, self.last
        assert first is not None and last is not None and self.tokens, "no tokens came back"
        started = self.started
        return first - started, end - started, self.tokens, self.decode_ms, last - started


class _Answer:
    """httptools' callbacks for one response: whether the server keeps the
    connection, and its body's SSE frames as they complete."""

    def __init__(self) -> None:
        self.keep = True
        self.done = False
        self.frames: list[bytes] = []
        self._partial = b""

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"connection" and b"close" in value.lower():
            self.keep = False

    def on_body(self, body: bytes) -> None:
        self._partial += body
        if b"\n\n" in self._partial:
            *complete, self._partial = self._partial.split(b"\n\n")
            self.frames += complete

    def on_message_complete(self) -> None:
        if self._partial:
            self.frames.append(self._partial)
        self.done = True


class SseClient:
    """Streamed POSTs to one server on loopback, with a bearer token."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.head = f"host: 127.0.0.1:{port}\r\nauthorization: Bearer {token}\r\n"
        self.local = threading.local()  # one socket per thread (the concurrent clients)
        self.opened: set[socket.socket] = set()
        self.lock = threading.Lock()

    def stream(self, path: str, body: dict[str, Any]) -> Sample:
        """One streamed request, timed from just before its write."""
        data = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\n{self.head}content-type: application/json\r\n"
            f"content-length: {len(data)}\r\n\r\n"
        ).encode()
        sock = self._socket()
        try:
            return self._exchange(sock, path, head, data)
        except BaseException:
            self._close()  # mid-answer: the connection cannot carry another
            raise

    def _exchange(self, sock: socket.socket, path: str, head: bytes, data: bytes) -> Sample:
        answer = _Answer()
        parser = httptools.HttpResponseParser(answer)
        tally = Tally()
        sock.sendall(head)
        sock.sendall(data)
        while not answer.done:
            got = sock.recv(65536)
            if not got:
                raise ConnectionError(f"the server closed the connection ({path})")
            parser.feed_data(got)
            frames, answer.frames = answer.frames, []
            for frame in frames:
                tally.line(frame)
        status = parser.get_status_code()
        if status != 200:
            raise RuntimeError(f"{path} answered {status}")
        sample = tally.sample()
        if not answer.keep:
            self._close()
        return sample

    def _socket(self) -> socket.socket:
        """This thread's connection; a new one when the server has closed it
        while idle (readable with nothing to read: httpx checks the same)."""
        sock: socket.socket | None = getattr(self.local, "sock", None)
        if sock is not None and select.select([sock], [], [], 0)[0]:
            self._close()
            sock = None
        if sock is None:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT_S)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.local.sock = sock
            with self.lock:
                self.opened.add(sock)
        return sock

    def _close(self) -> None:
        sock, self.local.sock = self.local.sock, None
        with self.lock:
            self.opened.discard(sock)
        sock.close()

    def close(self) -> None:
        """Every thread's connection."""
        with self.lock:
            opened, self.opened = self.opened, set()
        for sock in opened:
            sock.close()
