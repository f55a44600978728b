"""Limits on the HTTP connection itself, before any route or auth runs.

uvicorn's httptools protocol buffers a header of any size and waits forever for
a request head or body that never finishes, so a few hundred slow or huge
requests could take the queen's memory and file descriptors. This protocol
class adds: a cap on the request head's bytes (431), a time limit for the head
(408 and close) and for the body (the same), and a cap on open connections per
client address (503 and close). Every refusal is the error envelope.

It also starts a request's app once its body is whole, when the body is
small and announced (`Content-Length` up to uvicorn's 64 KiB buffer): a
client (httpx) writes the head and the body in two sends, and a queen on the
client's CPU, woken by the head, ran its middleware before the client could
send the body, which then came 0.25 ms later (`docs/benchmarks.md`). Started
at the head, the app would only wait for that body. A request that asks for
`100-continue`, a chunked or larger body, still starts at its head. From
a request's first byte to its last, the queen's deferred bookkeeping waits
(rbee_queen/deferred.py; the app's middleware holds it on until the answer's
body begins): run there, it was what the client's body waited behind.
"""

from __future__ import annotations

import json
import secrets
from asyncio import TimerHandle, Transport
from dataclasses import dataclass
from typing import Any

from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from rbee_queen import deferred
from rbee_queen.config import QueenConfig
from rbee_queen.errors import (
    ClientTooSlow,
    HeadersTooLarge,
    RbeeError,
    TooManyConnections,
)


@dataclass(frozen=True)
class HttpLimits:
    """The [http] settings (config_schema_service.py says what each bounds):
    the request line and headers together; from a connection's first byte to
    the head's end; from the head's end to the body's last byte; open
    connections from one address."""

    max_head_bytes: int
    head_timeout_s: float
    body_timeout_s: float
    max_connections_per_client: int

    @classmethod
    def of(cls, config: QueenConfig) -> HttpLimits:
        """The limits the queen's settings name (the [http] section)."""
        return cls(
            max_head_bytes=config.http_max_head_bytes,
            head_timeout_s=config.http_head_timeout_s,
            body_timeout_s=config.http_body_timeout_s,
            max_connections_per_client=config.http_max_connections_per_client,
        )


def refusal(error: RbeeError) -> bytes:
    """A whole HTTP answer carrying `error`'s envelope, with Connection: close."""
    cid = secrets.token_hex(8)
    body = json.dumps(error.envelope(cid)).encode()
    head = (
        f"HTTP/1.1 {error.status} {error.code}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        f"x-correlation-id: {cid}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


class LimitedHttpProtocol(HttpToolsProtocol):
    limits: HttpLimits  # set by protocol_class

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._timer: TimerHandle | None = None
        # A request whose app starts once its body is whole.
        self._unstarted: tuple[RequestResponseCycle, ASGI3Application] | None = None
        self._arriving: deferred.Hold | None = None  # a request read in part

    def connection_made(self, transport: Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        host = self.client[0] if self.client else None
        same = sum(1 for c in self.connections if _address(c) == host)
        if host is not None and same > self.limits.max_connections_per_client:
            cap = self.limits.max_connections_per_client
            self._refuse(TooManyConnections(f"more than {cap} open connections from one address"))
            return
        self._arm(self.limits.head_timeout_s, "the request head")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._unstarted = None  # its body never came: no app to run
        self._arrived()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # While a head is being read, feed the parser no more than the head may
        # hold: httptools would otherwise buffer a header of any size.
        while data and not self.transport.is_closing():
            if not self._in_head:
                super().data_received(data)
                return
            if self._timer is None:
                self._arm(self.limits.head_timeout_s, "the request head")
            room = self.limits.max_head_bytes - self._head_bytes
            if room <= 0:
                limit = self.limits.max_head_bytes
                self._refuse(HeadersTooLarge(f"request line and headers over {limit} bytes"))
                return
            part, data = data[:room], data[room:]
            self._head_bytes += len(part)
            super().data_received(part)

    def on_message_begin(self) -> None:
        self._arrived()
        self._arriving = deferred.Hold()
        super().on_message_begin()

    def _arrived(self) -> None:
        if self._arriving is not None:
            self._arriving.release()
            self._arriving = None

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._arm(self.limits.body_timeout_s, "the request body")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_head, self._head_bytes = True, 0
        super().on_message_complete()
        if self._unstarted is not None:
            cycle, app = self._unstarted
            self._unstarted = None
            super()._start_asgi_task(cycle, app)
        self._arrived()  # the app's middleware holds on, from its first step

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        if cycle.more_body and not self.expect_100_continue and _small_body(self.headers):
            self._unstarted = (cycle, app)  # on_message_complete starts it
            return
        super()._start_asgi_task(cycle, app)

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._expired, what)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self, what: str) -> None:
        self._timer = None
        if self.cycle is not None and self.cycle.response_started:
            self.transport.close()  # an answer is under way: it cannot become a 408
            return
        self._refuse(ClientTooSlow(f"{what} did not arrive in time"))

    def _refuse(self, error: RbeeError) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(refusal(error))
            self.transport.close()


def _address(protocol: object) -> str | None:
    client = getattr(protocol, "client", None)
    return client[0] if client else None


def _small_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """The head announces a body of 1 to HIGH_WATER_LIMIT bytes, not chunked."""
    length = None
    for name, value in headers:
        if name == b"transfer-encoding":
            return False
        if name == b"content-length":
            length = value
    return length is not None and length.isdigit() and 0 < int(length) <= HIGH_WATER_LIMIT


def protocol_class(limits: HttpLimits) -> type[LimitedHttpProtocol]:
    """The protocol uvicorn builds per connection, with `limits` in force."""
    return type("LimitedHttpProtocol", (LimitedHttpProtocol,), {"limits": limits})
