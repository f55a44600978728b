"""Limits on the HTTP connection itself, before any route or auth runs.

uvicorn's httptools protocol buffers a header of any size and waits forever for
a request head or body that never finishes, so a few hundred slow or huge
requests could take the queen's memory and file descriptors. This protocol
class adds: a cap on the request head's bytes (431), a time limit for the head
(408 and close) and for the body (the same), and a cap on open connections per
client address (503 and close). Every refusal is the error envelope.
"""

from __future__ import annotations

import json
import secrets
from asyncio import TimerHandle, Transport
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._arm(self.limits.body_timeout_s, "the request body")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_head, self._head_bytes = True, 0
        super().on_message_complete()

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


def protocol_class(limits: HttpLimits) -> type[LimitedHttpProtocol]:
    """The protocol uvicorn builds per connection, with `limits` in force."""
    return type("LimitedHttpProtocol", (LimitedHttpProtocol,), {"limits": limits})
